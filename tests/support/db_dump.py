"""Every table of a DB but `meta`, rows sorted: what two builds of the same types share."""
from __future__ import annotations

import sqlite3


def dump_tables(db: str) -> dict:
    conn = sqlite3.connect(db)
    try:
        out = {}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                     "ORDER BY name"):
            if table != "meta":
                # table names come from sqlite_master of our own DB, not from input
                out[table] = sorted(map(repr, conn.execute(f"SELECT * FROM {table}")))
        return out
    finally:
        conn.close()
