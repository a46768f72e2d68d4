"""Comparing DBs.

`dump_tables`: every table of a DB but `meta`, rows sorted: what two builds of the same
types share.  `diff_dbs`: the strict form, for a writer changed for speed that must write
the same DB: the schema (every table and index, as SQL, in the order they were made),
every table's rows in the order a plain `SELECT *` returns them (rowid / primary-key
order) with their SQLite types and rowids, and the meta table but for the keys that name
the build itself (`built_at`).

    python -m tests.support.db_dump A.db B.db      # exit 0 when the same, else the differences
"""
from __future__ import annotations

import sqlite3
import sys

# meta keys that differ between two builds of the same input
BUILD_KEYS = ("built_at",)


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


def _open_ro(db: str) -> sqlite3.Connection:
    import urllib.parse
    import os
    return sqlite3.connect("file:" + urllib.parse.quote(os.path.abspath(db)) + "?mode=ro",
                           uri=True)


def diff_dbs(a: str, b: str, ignore_meta=BUILD_KEYS, limit: int = 10) -> list:
    """The differences between DBs `a` and `b` (at most `limit` per table), [] when they
    hold the same schema and the same rows in the same order."""
    ca, cb = _open_ro(a), _open_ro(b)
    try:
        diffs = []
        # in its own order: the order the tables and indexes were made in
        schema_sql = "SELECT type, name, tbl_name, sql FROM sqlite_master"
        sa, sb = ca.execute(schema_sql).fetchall(), cb.execute(schema_sql).fetchall()
        if sa != sb:
            only = sorted(set(sa) ^ set(sb))
            diffs.append(f"schema: {only[:limit]}" if only else
                         f"schema: made in another order: {[r[1] for r in sa]} against "
                         f"{[r[1] for r in sb]}")
        tables = [r[1] for r in sa if r[0] == "table" and r in sb]
        for table in tables:
            # typeof() too: 1, '1' and 1.0 are different values to a reader; and the rowid
            # of a rowid table (the order of a table without an INTEGER PRIMARY KEY)
            cols = [r[1] for r in ca.execute(f"PRAGMA table_info({table})")]
            rowid = "WITHOUT ROWID" not in next(r[3] for r in sa if r[1] == table).upper()
            sel = ("rowid, " if rowid else "") + ", ".join(f"{c}, typeof({c})" for c in cols)
            # table and column names come from sqlite_master of the DBs compared
            ra = ca.execute(f"SELECT {sel} FROM {table}").fetchall()
            rb = cb.execute(f"SELECT {sel} FROM {table}").fetchall()
            if table == "meta":
                key = 1 if rowid else 0
                ra = [r for r in ra if r[key] not in ignore_meta]
                rb = [r for r in rb if r[key] not in ignore_meta]
            if len(ra) != len(rb):
                diffs.append(f"{table}: {len(ra)} rows against {len(rb)}")
            bad = [(i, x, y) for i, (x, y) in enumerate(zip(ra, rb)) if x != y]
            for i, x, y in bad[:limit]:
                diffs.append(f"{table} row {i}: {x!r} != {y!r}")
            if len(bad) > limit:
                diffs.append(f"{table}: {len(bad) - limit} more rows differ")
        return diffs
    finally:
        ca.close()
        cb.close()


def main(argv) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.support.db_dump A.db B.db", file=sys.stderr)
        return 2
    diffs = diff_dbs(*argv)
    for d in diffs:
        print(d)
    if not diffs:
        print(f"same: {argv[0]} {argv[1]}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
