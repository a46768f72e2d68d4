"""The kernel DB's schema, declared once: the writer (store.py) creates tables and inserts
rows from these declarations, and every reader (the resolver, `dbhive show/list`, the
server, tests) selects the columns named here and opens DBs through `open_db`, which checks
the schema version.

Two faces in one DB:
  * `meta` and our normalized tables (`kt_*`), holding the type graph exactly;
  * the five surftrace tables (`files`, `funs`, `structs`, `members`, `types`) described in
    shared/docs/surftrace-db-contract.md, which the unmodified surftrace client reads.

Plain data rather than an ORM: the resolver must open a DB and answer its first query in a
millisecond or so, and every statement here is constant text with `?` parameters.
"""
from __future__ import annotations

import os
import sqlite3
import urllib.parse
from typing import NamedTuple

from .errors import CorruptDB, SchemaError

# Bump when a table or a column changes meaning; readers refuse other versions.
# 2: BTF's variables, data sections and declaration tags (kt_variables, kt_datasecs,
#    kt_datasec_entries, kt_decl_tags), so a DB holds everything BTF can say.
SCHEMA_VERSION = "2"


class Table(NamedTuple):
    name: str
    columns: tuple              # ((name, SQL type and constraints), ...)
    primary_key: tuple = ()     # composite primary key (column names), if any
    without_rowid: bool = False
    indexes: tuple = ()         # ((index name, (column, ...)[, partial index WHERE]), ...)

    @property
    def column_names(self) -> tuple:
        return tuple(c for c, _ in self.columns)


META = Table("meta", (("key", "TEXT PRIMARY KEY"), ("value", "TEXT")))
KT_TYPES = Table("kt_types", (
    ("id", "INTEGER PRIMARY KEY"), ("kind", "TEXT NOT NULL"), ("name", "TEXT"),
    ("size", "INTEGER"), ("ref", "INTEGER"), ("nelems", "INTEGER"), ("variadic", "INTEGER"),
    ("signed", "INTEGER"), ("encoding", "TEXT"), ("origin", "TEXT"), ("spelling", "TEXT")),
    # by name only the named types are looked up (`name = ?` implies NOT NULL, so SQLite
    # uses the partial index): a fifth of the rows; a vmlinux DB is written ~0.05 s sooner
    indexes=(("kt_types_name", ("name", "kind"), "name IS NOT NULL"),))
KT_MEMBERS = Table("kt_members", (
    ("type_id", "INTEGER NOT NULL"), ("idx", "INTEGER NOT NULL"), ("name", "TEXT"),
    ("member_type", "INTEGER NOT NULL"), ("bit_offset", "INTEGER NOT NULL"),
    ("bit_size", "INTEGER NOT NULL")),
    primary_key=("type_id", "idx"), without_rowid=True)
KT_ENUMERATORS = Table("kt_enumerators", (
    ("type_id", "INTEGER NOT NULL"), ("idx", "INTEGER NOT NULL"), ("name", "TEXT"),
    ("value", "TEXT")),          # decimal text: enum64 values exceed SQLite's INTEGER
    primary_key=("type_id", "idx"), without_rowid=True)
KT_PARAMS = Table("kt_params", (
    ("proto_id", "INTEGER NOT NULL"), ("idx", "INTEGER NOT NULL"), ("name", "TEXT"),
    ("param_type", "INTEGER NOT NULL")),
    primary_key=("proto_id", "idx"), without_rowid=True)
KT_FUNCTIONS = Table("kt_functions", (
    ("id", "INTEGER PRIMARY KEY"), ("name", "TEXT NOT NULL"), ("proto", "INTEGER NOT NULL"),
    ("static", "INTEGER NOT NULL"), ("file", "TEXT"), ("line", "INTEGER"), ("module", "TEXT")),
    indexes=(("kt_functions_name", ("name",)),))
# BTF's VAR / DATASEC / DECL_TAG records (empty for a DWARF-built DB).  `target` is a
# kt_types.id ('type'), a kt_functions.id ('func') or a kt_variables.id ('var').
KT_VARIABLES = Table("kt_variables", (
    ("id", "INTEGER PRIMARY KEY"), ("name", "TEXT NOT NULL"), ("var_type", "INTEGER NOT NULL"),
    ("linkage", "TEXT NOT NULL")))
KT_DATASECS = Table("kt_datasecs", (
    ("id", "INTEGER PRIMARY KEY"), ("name", "TEXT NOT NULL"), ("size", "INTEGER NOT NULL")))
KT_DATASEC_ENTRIES = Table("kt_datasec_entries", (
    ("sec_id", "INTEGER NOT NULL"), ("idx", "INTEGER NOT NULL"),
    ("target_kind", "TEXT NOT NULL"), ("target", "INTEGER NOT NULL"),
    ("offset", "INTEGER NOT NULL"), ("size", "INTEGER NOT NULL")),
    primary_key=("sec_id", "idx"), without_rowid=True)
KT_DECL_TAGS = Table("kt_decl_tags", (
    ("id", "INTEGER PRIMARY KEY"), ("value", "TEXT NOT NULL"),
    ("target_kind", "TEXT NOT NULL"), ("target", "INTEGER NOT NULL"),
    ("component", "INTEGER NOT NULL")))
# ---- the surftrace contract ----
FILES = Table("files", (("id", "INTEGER PRIMARY KEY"), ("file", "TEXT")))
FUNS = Table("funs", (
    ("func", "TEXT"), ("args", "TEXT"), ("ret", "TEXT"), ("line", "INTEGER"),
    ("fid", "INTEGER"), ("module", "TEXT")),
    indexes=(("funs_func", ("func",)),))
STRUCTS = Table("structs", (
    ("id", "INTEGER PRIMARY KEY"), ("name", "TEXT"), ("members", "INTEGER"),
    ("bytes", "INTEGER")),
    indexes=(("structs_name", ("name",)),))
MEMBERS = Table("members", (
    ("fid", "INTEGER"), ("types", "TEXT"), ("name", "TEXT"), ("offset", "INTEGER"),
    ("bytes", "INTEGER"), ("bits", "TEXT")),
    indexes=(("members_fid", ("fid",)),))
TYPES = Table("types", (
    ("id", "INTEGER PRIMARY KEY"), ("name", "TEXT"), ("alias", "TEXT"), ("bytes", "INTEGER")),
    indexes=(("types_name", ("name",)),))

TABLES = (META, KT_TYPES, KT_MEMBERS, KT_ENUMERATORS, KT_PARAMS, KT_FUNCTIONS,
          KT_VARIABLES, KT_DATASECS, KT_DATASEC_ENTRIES, KT_DECL_TAGS, FILES, FUNS, STRUCTS, MEMBERS, TYPES)
SURFTRACE_TABLES = (FILES, FUNS, STRUCTS, MEMBERS, TYPES)
BY_NAME = {t.name: t for t in TABLES}


# ---- statements ---------------------------------------------------------------------------

def create_table_sql(t: Table) -> str:
    cols = [f"{c} {decl}" for c, decl in t.columns]
    if t.primary_key:
        cols.append(f"PRIMARY KEY ({', '.join(t.primary_key)})")
    return (f"CREATE TABLE {t.name} ({', '.join(cols)})"
            + (" WITHOUT ROWID" if t.without_rowid else ""))


def create_index_sql(t: Table) -> list:
    return [f"CREATE INDEX {name} ON {t.name} ({', '.join(cols)})"
            + (f" WHERE {where[0]}" if where else "")
            for name, cols, *where in t.indexes]


# Python's sqlite3 binds an int, float or str directly but a None through its adapter
# lookup, about 0.3 us a value (CPython 3.11): a table of mostly-NULL columns costs three
# times as much to fill.  So a bulk insert may bind NULL as this float instead and have
# SQLite turn it back into NULL (NULLIF); no column of ours ever holds a float.
NULL = 0.5


def insert_sql(t: Table, sparse: tuple = (), rows: int = 1) -> str:
    """Positional INSERT: rows are tuples in the table's column order.  The `sparse`
    columns take `NULL` (the float above) for SQL NULL.  `rows` > 1: that many rows in one
    statement (their values one after the other in one tuple), inserted in their order."""
    unknown = [c for c in sparse if c not in t.column_names]
    if unknown:
        raise AssertionError(f"{t.name} has no column {unknown[0]!r}")
    values = [f"NULLIF(?, {NULL!r})" if c in sparse else "?" for c in t.column_names]
    row = f"({', '.join(values)})"
    return f"INSERT INTO {t.name} ({', '.join(t.column_names)}) VALUES {', '.join([row] * rows)}"


def insert_select_sql(t: Table, sparse: tuple, source: str) -> str:
    """insert_sql's insert with the rows read from `source` (a table-valued function of
    ours, dbhive/_cbulk.c: columns c0, c1, ... in the table's column order)."""
    unknown = [c for c in sparse if c not in t.column_names]
    if unknown:
        raise AssertionError(f"{t.name} has no column {unknown[0]!r}")
    values = [f"NULLIF(c{i}, {NULL!r})" if c in sparse else f"c{i}"
              for i, c in enumerate(t.column_names)]
    return (f"INSERT INTO {t.name} ({', '.join(t.column_names)}) "
            f"SELECT {', '.join(values)} FROM {source}")


def select_sql(t: Table, columns=None, where: str = "", order: str = "") -> str:
    """`SELECT <columns> FROM <table> [WHERE ...] [ORDER BY ...]`; `where` uses `?`
    placeholders only (values are never formatted into SQL).  Unknown columns are a bug."""
    cols = tuple(columns) if columns else t.column_names
    unknown = [c for c in cols if c.split()[0] not in t.column_names]
    if unknown:
        raise AssertionError(f"{t.name} has no column {unknown[0]!r}")
    sql = f"SELECT {', '.join(cols)} FROM {t.name}"
    if where:
        sql += f" WHERE {where}"
    if order:
        sql += f" ORDER BY {order}"
    return sql


# ---- opening ------------------------------------------------------------------------------

def ro_uri(path: str) -> str:
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"


def connect_ro(path: str, threads: bool = False) -> sqlite3.Connection:
    """A read-only connection (SchemaError if the file is not an SQLite DB)."""
    try:
        conn = sqlite3.connect(ro_uri(path), uri=True, check_same_thread=not threads)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        raise SchemaError(f"{path} is not a dbhive kernel DB ({e})") from None
    return conn


_SQL_META = select_sql(META, ("key", "value"))


def damaged_db(path: str, e: sqlite3.DatabaseError) -> CorruptDB:
    """The error for an SQLite error met while reading rows of a DB that opened (damaged
    pages: `database disk image is malformed`)."""
    return CorruptDB(f"{path} is damaged ({e})")


def fetch_all(conn: sqlite3.Connection, path: str, sql: str, args: tuple = ()) -> list:
    """The rows of a query on the DB `path` that `conn` has open; an SQLite error met
    reading them is `damaged_db`'s one-line error."""
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.DatabaseError as e:
        raise damaged_db(path, e) from None


def read_meta_conn(conn: sqlite3.Connection, path: str) -> dict:
    try:
        return dict(conn.execute(_SQL_META).fetchall())
    except sqlite3.DatabaseError as e:
        raise SchemaError(f"{path} is not a dbhive kernel DB ({e})") from None


def check_version(meta: dict, path: str) -> None:
    """SchemaError unless the DB was written with this schema version."""
    v = meta.get("schema_version")
    if v is None:
        raise SchemaError(f"{path} is not a dbhive kernel DB (its meta table has no "
                          f"schema_version)")
    if v != SCHEMA_VERSION:
        raise SchemaError(f"{path} has schema version {v}; this dbhive reads version "
                          f"{SCHEMA_VERSION}: rebuild it with `dbhive build`")


def open_db(path: str, threads: bool = False) -> tuple:
    """(read-only connection, meta) of a dbhive DB whose schema version this code reads.
    SchemaError (one line naming the file) for anything else."""
    conn = connect_ro(path, threads)
    try:
        meta = read_meta_conn(conn, path)
        check_version(meta, path)
        missing = [t.name for t in TABLES if t is not META and t.name not in _table_names(conn)]
        if missing:
            raise SchemaError(f"{path} is damaged or incomplete (no table {missing[0]})")
    except BaseException:
        conn.close()
        raise
    return conn, meta


def _table_names(conn: sqlite3.Connection) -> set:
    try:
        return {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        return set()


def read_meta(path: str) -> dict:
    """The meta table of a DB file (any schema version).  SchemaError if unreadable."""
    conn = connect_ro(path)
    try:
        return read_meta_conn(conn, path)
    finally:
        conn.close()
