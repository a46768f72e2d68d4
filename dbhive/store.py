"""TypeGraph -> per-kernel SQLite DB (and back).

The tables are declared in schema.py; the surftrace tables are derived by surftrace.py.
Bulk rows go through the DB-API `executemany` with the schema's INSERT statements
(parameterized, never formatted).  A DB is written to a temporary file beside its
destination and renamed into place only when complete.
"""
from __future__ import annotations

import itertools
import os
import sqlite3
from typing import Iterable, Optional

from . import model as M
from . import output
from . import schema as S
from . import surftrace
from .errors import CorruptDB

SCHEMA_VERSION = S.SCHEMA_VERSION


# ---------------------------------------------------------------------------
# rows of the normalized tables: lists of tuples in column order, built in one comprehension
# each (the per-row Python is most of a write).  A column that is often NULL is bound as
# S.NULL (see schema.insert_sql): `N if x is None else x`.

N = S.NULL

# table -> its columns bound as S.NULL for NULL
_SPARSE = {
    S.KT_TYPES: ("name", "size", "ref", "nelems", "signed", "encoding", "origin"),
    S.KT_MEMBERS: ("name",),
    S.KT_PARAMS: ("name",),
    S.KT_FUNCTIONS: ("file", "line", "module"),
    S.FUNS: ("line", "module"),
}


def _type_rows(g: M.TypeGraph, spelled: list) -> list:
    return [(tid, t.kind, N if t.name is None else t.name, N if t.size is None else t.size,
             N if t.ref is None else t.ref, N if t.nelems is None else t.nelems,
             int(t.variadic), N if t.signed is None else int(t.signed),
             N if t.encoding is None else t.encoding, N if t.origin is None else t.origin,
             spelled[tid])
            for tid, t in enumerate(g.types)]


def _member_rows(g: M.TypeGraph) -> list:
    return [(tid, i, N if m.name is None else m.name, m.type, m.bit_offset, m.bit_size)
            for tid, t in enumerate(g.types) if t.members
            for i, m in enumerate(t.members)]


def _enum_rows(g: M.TypeGraph) -> list:
    return [(tid, i, e[0], str(e[1]))
            for tid, t in enumerate(g.types) if t.enumerators
            for i, e in enumerate(t.enumerators)]


def _param_rows(g: M.TypeGraph) -> list:
    return [(tid, i, N if p.name is None else p.name, p.type)
            for tid, t in enumerate(g.types) if t.params
            for i, p in enumerate(t.params)]


def _function_rows(g: M.TypeGraph) -> list:
    return [(i, f.name, f.proto, int(f.static), N if f.file is None else f.file,
             N if f.line is None else f.line, N if f.module is None else f.module)
            for i, f in enumerate(g.functions, start=1)]


# functions and variables are numbered from 1 in the DB (their index + 1)
def _db_target(kind: str, index: int) -> int:
    return index if kind == "type" else index + 1


def _model_target(kind: str, target: int) -> int:
    return target if kind == "type" else target - 1


def _variable_rows(g: M.TypeGraph):
    for i, v in enumerate(g.variables):
        yield (i + 1, v.name, v.type, v.linkage)


def _datasec_rows(g: M.TypeGraph):
    for i, d in enumerate(g.datasecs):
        yield (i + 1, d.name, d.size)


def _datasec_entry_rows(g: M.TypeGraph):
    for i, d in enumerate(g.datasecs):
        for j, (kind, index, offset, size) in enumerate(d.entries):
            yield (i + 1, j, kind, _db_target(kind, index), offset, size)


def _decl_tag_rows(g: M.TypeGraph):
    for i, t in enumerate(g.decl_tags):
        yield (i + 1, t.value, t.target_kind, _db_target(t.target_kind, t.target), t.component)


# ---------------------------------------------------------------------------

def write_db(graph: M.TypeGraph, meta: dict, dest: str, must_exist_dir: bool = False,
             parallel: bool = True, late_meta: Optional[dict] = None) -> dict:
    """Write `graph` and `meta` to `dest` atomically (output.atomic_path: temp file + rename;
    a non-regular destination is refused).  Returns the meta as written (with the counts
    and schema version added).

    `late_meta`: {key: callable} of meta values still being worked out elsewhere (the
    input's sha256, hashed by a process of its own): each is called after the rows are
    handed over, so it is waited for while SQLite inserts them, not before.

    `parallel`: SQLite inserts the rows on a thread of its own (_cbulk.Writer, which runs
    without the GIL) while this thread makes the next table's rows; else, or for a small
    graph, or without the C loader, each table is written here as it is made.  Either way
    the statements and their order are the same, and so is the DB."""
    meta = dict(meta)
    meta.setdefault("schema_version", SCHEMA_VERSION)
    meta.setdefault("type_source", graph.source)
    meta["types"] = str(len(graph.types))
    meta["functions"] = str(len(graph.functions))
    meta["structs"] = str(sum(1 for t in graph.types
                              if t.kind in M.COMPOSITE and t.size is not None))
    with output.atomic_path(dest, suffix=".db", must_exist_dir=must_exist_dir) as tmp, \
            M.gc_paused():
        conn = sqlite3.connect(tmp)
        try:
            _create_tables(conn)
            conn.commit()
            sink = _Sink(conn, tmp, parallel and len(graph.types) >= PARALLEL_MIN_TYPES)
            try:
                # the tables that need no spelling first: the SQLite thread starts on them
                # while the spellings are made
                _write_unspelled(sink, graph)
                # every type's C spelling, worked out once: kt_types and the surftrace tables
                spelled = M.spell_all(graph)
                _write_types(sink, graph, spelled)
                _write_surftrace(sink, graph, spelled)
                sink.indexes(S.TABLES)
                M.free_deferred()       # while the SQLite thread works, if there is one
                meta.update((k, value()) for k, value in (late_meta or {}).items())
                sink.finish()
            except Exception:
                sink.abort()            # an earlier table's error, if it had one, first
                raise
            except BaseException:
                sink.abort(quiet=True)
                raise
            _bulk(conn, S.META, ((k, None if v is None else str(v))
                                 for k, v in sorted(meta.items())))
            conn.commit()
        finally:
            conn.close()
    return meta


# below this many types the writer thread saves less than it costs (a module's DB)
PARALLEL_MIN_TYPES = 5000


class _Sink:
    """Where write_db's rows and indexes go, in order: to the C writer thread
    (_cbulk.Writer) when `threaded` and it is built, else into the DB here.  Rows with a
    value only the sqlite3 module binds right (see _bulk_all) end the thread: they and
    all after them are written here, after what the thread was given."""

    def __init__(self, conn: sqlite3.Connection, path: str, threaded: bool):
        self.conn, self.path = conn, path
        loader = c_bulk() if threaded else None
        self.writer = loader.Writer(path) if loader is not None else None

    def rows(self, table: S.Table, rows) -> None:
        rows = rows if isinstance(rows, list) else list(rows)
        if self.writer is not None:
            if self.writer.rows(_c_insert(table, rows)):
                return
            self.finish()
        _bulk_all(self.conn, self.path, ((table, rows),))

    def indexes(self, tables) -> None:
        if self.writer is None:
            _create_indexes(self.conn, tables)
            return
        for t in tables:
            for stmt in S.create_index_sql(t):
                self.writer.sql(stmt)

    def finish(self) -> None:
        """What the thread was given, committed (its error raised, if it had one)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.finish()

    def abort(self, quiet: bool = False) -> None:
        """Stop the thread; raise its error, if it had one (unless `quiet`)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.abort()
            except sqlite3.Error:
                if not quiet:
                    raise


# The steps of write_db, in its order (bench/bench_btf.py times each).

def _create_tables(conn: sqlite3.Connection) -> None:
    # a temp file renamed only when complete: no journal, no fsync per statement
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    for t in S.TABLES:
        conn.execute(S.create_table_sql(t))


def _write_unspelled(sink: _Sink, graph: M.TypeGraph) -> None:
    """Every normalized table but kt_types (the ones that need no C spelling)."""
    for table, rows in ((S.KT_MEMBERS, _member_rows),
                        (S.KT_ENUMERATORS, _enum_rows),
                        (S.KT_PARAMS, _param_rows),
                        (S.KT_FUNCTIONS, _function_rows),
                        (S.KT_VARIABLES, _variable_rows),
                        (S.KT_DATASECS, _datasec_rows),
                        (S.KT_DATASEC_ENTRIES, _datasec_entry_rows),
                        (S.KT_DECL_TAGS, _decl_tag_rows)):
        sink.rows(table, rows(graph))


def _write_types(sink: _Sink, graph: M.TypeGraph, spelled: list) -> None:
    """kt_types, with each type's C spelling."""
    sink.rows(S.KT_TYPES, _type_rows(graph, spelled))


def _write_surftrace(sink: _Sink, graph: M.TypeGraph, spelled: list) -> None:
    """The surftrace tables, made in three parts (surftrace.table_rows' order)."""
    spell = spelled.__getitem__
    for table, rows in zip((S.FILES, S.FUNS), surftrace.function_rows(graph, spell, N, spelled)):
        sink.rows(table, rows)
    for table, rows in zip((S.STRUCTS, S.MEMBERS), surftrace.struct_rows(graph, spell, spelled)):
        sink.rows(table, rows)
    sink.rows(S.TYPES, surftrace.type_rows(graph, spell, spelled))


def _create_indexes(conn: sqlite3.Connection, tables) -> None:
    # after the bulk load: building an index once is faster than keeping it up to date
    for t in tables:
        for stmt in S.create_index_sql(t):
            conn.execute(stmt)


# Rows per INSERT statement in a bulk load: each statement run costs the sqlite3 module a
# reset, a step and the GIL released and taken again, and SQLite a mutex per call, a third
# of the time when it is one row.  At most this many values in a statement (SQLite before
# 3.32 allows 999).
_VALUES_PER_STATEMENT = 999


def _bulk_all(conn: sqlite3.Connection, path: str, parts: Iterable[tuple]) -> None:
    """Every (table, rows) of `parts` into the DB file `path`, which `conn` has open (and
    nothing uncommitted in): by the C loader (dbhive/_cbulk.c) on a connection of its own
    where it is built and binds every value the way the sqlite3 module does, else by
    `_bulk` on `conn`.  The same statements either way, so the same DB."""
    parts = [(t, rows if isinstance(rows, list) else list(rows)) for t, rows in parts]
    loader = c_bulk()
    if loader is not None:
        conn.commit()                    # the loader's connection writes next
        if loader.load(path, [_c_insert(t, rows) for t, rows in parts]):
            return
    for t, rows in parts:
        _bulk(conn, t, rows)


def _c_insert(table: S.Table, rows: list) -> tuple:
    """A part for the C loader (_cbulk.c: load, Writer.rows): (the insert from
    dbhive_rows, columns per row, rows)."""
    return (S.insert_select_sql(table, _SPARSE.get(table, ()), "dbhive_rows(?)"),
            len(table.columns), rows)


def c_bulk():
    """The C bulk loader (dbhive/_cbulk.c), or None: not built, or turned off by
    DBHIVE_BULK_PURE=1 (then the sqlite3 module writes the rows: the reference)."""
    if os.environ.get("DBHIVE_BULK_PURE", "") not in ("", "0"):
        return None
    try:
        from . import _cbulk
    except ImportError:
        return None
    return _cbulk


def _bulk(conn: sqlite3.Connection, table: S.Table, rows: Iterable[tuple]) -> None:
    sparse = _SPARSE.get(table, ())
    rows = rows if isinstance(rows, list) else list(rows)
    k = max(1, _VALUES_PER_STATEMENT // len(table.columns))
    whole = len(rows) - len(rows) % k
    if whole:
        values = itertools.chain.from_iterable
        conn.executemany(S.insert_sql(table, sparse, rows=k),
                         (tuple(values(rows[i:i + k])) for i in range(0, whole, k)))
    if whole < len(rows):
        conn.executemany(S.insert_sql(table, sparse), rows[whole:])


# ---------------------------------------------------------------------------
# reading back

def read_meta(path: str) -> dict:
    """The meta table of a DB file (any schema version)."""
    return S.read_meta(path)


_SQL_TYPES = S.select_sql(S.KT_TYPES, ("id", "kind", "name", "size", "ref", "nelems",
                                       "variadic", "signed", "encoding", "origin"),
                          order="id")
_SQL_MEMBERS = S.select_sql(S.KT_MEMBERS, ("type_id", "name", "member_type", "bit_offset",
                                           "bit_size"), order="type_id, idx")
_SQL_ENUMERATORS = S.select_sql(S.KT_ENUMERATORS, ("type_id", "name", "value"),
                                order="type_id, idx")
_SQL_PARAMS = S.select_sql(S.KT_PARAMS, ("proto_id", "name", "param_type"),
                           order="proto_id, idx")
_SQL_FUNCTIONS = S.select_sql(S.KT_FUNCTIONS, ("name", "proto", "static", "file", "line",
                                               "module"), order="id")
_SQL_VARIABLES = S.select_sql(S.KT_VARIABLES, ("name", "var_type", "linkage"), order="id")
_SQL_DATASECS = S.select_sql(S.KT_DATASECS, ("id", "name", "size"), order="id")
_SQL_DATASEC_ENTRIES = S.select_sql(S.KT_DATASEC_ENTRIES, ("sec_id", "target_kind", "target",
                                                           "offset", "size"),
                                    order="sec_id, idx")
_SQL_DECL_TAGS = S.select_sql(S.KT_DECL_TAGS, ("value", "target_kind", "target", "component"),
                              order="id")


def load_graph(path: str) -> M.TypeGraph:
    """The whole TypeGraph stored in a DB (for tests, comparisons and `dbhive show`).
    SchemaError for a file that is not a DB of this schema version, CorruptDB for one
    whose pages or rows are damaged."""
    conn, meta = S.open_db(path)
    try:
        return _load(conn, meta, path)
    except sqlite3.DatabaseError as e:
        raise S.damaged_db(path, e) from None
    finally:
        conn.close()


def _load(conn, meta: dict, path: str) -> M.TypeGraph:
    g = M.TypeGraph(types=[], source=meta.get("type_source", ""),
                    ptr_size=_ptr_size(meta))
    for (tid, kind, name, size, ref, nelems, variadic, signed, encoding, origin) in \
            conn.execute(_SQL_TYPES):
        if tid != len(g.types):
            raise CorruptDB(f"{path} is damaged (type ids are not dense at id {tid})")
        g.types.append(M.Type(kind=M.own_kind(kind), name=name, size=size, ref=ref,
                              nelems=nelems, variadic=bool(variadic),
                              signed=None if signed is None else bool(signed),
                              encoding=encoding, origin=origin))
    n = len(g.types)
    for tid, name, mtype, boff, bsize in conn.execute(_SQL_MEMBERS):
        t = g.types[tid] if 0 <= tid < n else None
        if t is None:
            continue
        if t.members is None:
            t.members = []
        t.members.append(M.Member(name, mtype, boff, bsize))
    for tid, name, value in conn.execute(_SQL_ENUMERATORS):
        if 0 <= tid < n:
            t = g.types[tid]
            if t.enumerators is None:
                t.enumerators = []
            t.enumerators.append((name, int(value)))
    for tid, name, ptype in conn.execute(_SQL_PARAMS):
        if 0 <= tid < n:
            t = g.types[tid]
            if t.params is None:
                t.params = []
            t.params.append(M.Param(name, ptype))
    for t in g.types:
        if t.kind == M.FUNC_PROTO and t.params is None:
            t.params = []
    for name, proto, static, file, line, module in conn.execute(_SQL_FUNCTIONS):
        g.functions.append(M.Function(name, proto, bool(static), file, line, module))
    for name, vtype, linkage in conn.execute(_SQL_VARIABLES):
        g.variables.append(M.Variable(name, vtype, linkage))
    secs = {}
    for sid, name, size in conn.execute(_SQL_DATASECS):
        secs[sid] = M.DataSec(name, size)
        g.datasecs.append(secs[sid])
    for sid, kind, target, offset, size in conn.execute(_SQL_DATASEC_ENTRIES):
        if sid in secs:
            secs[sid].entries.append((kind, _model_target(kind, target), offset, size))
    for value, kind, target, component in conn.execute(_SQL_DECL_TAGS):
        g.decl_tags.append(M.DeclTag(value, kind, _model_target(kind, target), component))
    M.check_references(g, path)
    return g


def _ptr_size(meta: dict) -> int:
    return M.pointer_size(meta.get("arch") or "")

