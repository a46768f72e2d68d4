"""TypeGraph -> per-kernel SQLite DB (and back).

Two faces in one file:
  * our normalized tables (`kt_*`) holding the type graph exactly, plus `meta`;
  * the five surftrace tables (`files`, `funs`, `structs`, `members`, `types`) described in
    shared/docs/surftrace-db-contract.md, so the unmodified surftrace client reads our DBs.

The schema is declared once with SQLAlchemy; bulk rows go through the DB-API
`executemany` with the statements SQLAlchemy compiles (parameterized, never formatted).
A DB is written to a temporary file beside its destination and renamed into place only
when complete.
"""
from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from typing import Iterable

from . import model as M

SCHEMA_VERSION = "1"

_metadata = None


def schema():
    """The SQLAlchemy MetaData of a kernel DB (built on first use: the resolver,
    which only reads, never imports SQLAlchemy)."""
    global _metadata
    if _metadata is not None:
        return _metadata
    from sqlalchemy import (Column, Index, Integer, MetaData, PrimaryKeyConstraint,
                            Table, Text)
    md = MetaData()
    Table("meta", md, Column("key", Text, primary_key=True), Column("value", Text))
    Table("kt_types", md,
          Column("id", Integer, primary_key=True),
          Column("kind", Text, nullable=False),
          Column("name", Text),
          Column("size", Integer),
          Column("ref", Integer),
          Column("nelems", Integer),
          Column("variadic", Integer),
          Column("signed", Integer),
          Column("encoding", Text),
          Column("origin", Text),
          Column("spelling", Text),
          Index("kt_types_name", "name", "kind"))
    Table("kt_members", md,
          Column("type_id", Integer, nullable=False),
          Column("idx", Integer, nullable=False),
          Column("name", Text),
          Column("member_type", Integer, nullable=False),
          Column("bit_offset", Integer, nullable=False),
          Column("bit_size", Integer, nullable=False),
          PrimaryKeyConstraint("type_id", "idx"),
          sqlite_with_rowid=False)
    Table("kt_enumerators", md,
          Column("type_id", Integer, nullable=False),
          Column("idx", Integer, nullable=False),
          Column("name", Text),
          Column("value", Text),       # decimal text: enum64 values exceed SQLite's INTEGER
          PrimaryKeyConstraint("type_id", "idx"),
          sqlite_with_rowid=False)
    Table("kt_params", md,
          Column("proto_id", Integer, nullable=False),
          Column("idx", Integer, nullable=False),
          Column("name", Text),
          Column("param_type", Integer, nullable=False),
          PrimaryKeyConstraint("proto_id", "idx"),
          sqlite_with_rowid=False)
    Table("kt_functions", md,
          Column("id", Integer, primary_key=True),
          Column("name", Text, nullable=False),
          Column("proto", Integer, nullable=False),
          Column("static", Integer, nullable=False),
          Column("file", Text),
          Column("line", Integer),
          Column("module", Text),
          Index("kt_functions_name", "name"))
    # ---- the surftrace contract ----
    Table("files", md, Column("id", Integer, primary_key=True), Column("file", Text))
    Table("funs", md,
          Column("func", Text), Column("args", Text), Column("ret", Text),
          Column("line", Integer), Column("fid", Integer), Column("module", Text),
          Index("funs_func", "func"))
    Table("structs", md,
          Column("id", Integer, primary_key=True), Column("name", Text),
          Column("members", Integer), Column("bytes", Integer),
          Index("structs_name", "name"))
    Table("members", md,
          Column("fid", Integer), Column("types", Text), Column("name", Text),
          Column("offset", Integer), Column("bytes", Integer), Column("bits", Text),
          Index("members_fid", "fid"))
    Table("types", md,
          Column("id", Integer, primary_key=True), Column("name", Text),
          Column("alias", Text), Column("bytes", Integer),
          Index("types_name", "name"))
    _metadata = md
    return md


def _insert_sql(table_name: str) -> str:
    """Positional INSERT for a table; rows are tuples in the table's column order."""
    from sqlalchemy.dialects import sqlite as sqlite_dialect
    table = schema().tables[table_name]
    return str(table.insert().compile(dialect=sqlite_dialect.dialect(paramstyle="qmark")))


def _ddl() -> tuple:
    """(CREATE TABLE statements, CREATE INDEX statements) compiled from the schema.
    Indexes are created after the bulk load: building them once is faster."""
    from sqlalchemy.dialects import sqlite as sqlite_dialect
    from sqlalchemy.schema import CreateIndex, CreateTable
    dialect = sqlite_dialect.dialect()
    tables = schema().sorted_tables
    return ([str(CreateTable(t).compile(dialect=dialect)) for t in tables],
            [str(CreateIndex(i).compile(dialect=dialect)) for t in tables for i in t.indexes])


# ---------------------------------------------------------------------------
# rows of the normalized tables

def _type_rows(g: M.TypeGraph, spell):
    for tid, t in enumerate(g.types):
        yield (tid, t.kind, t.name, t.size, t.ref, t.nelems, int(t.variadic),
               None if t.signed is None else int(t.signed), t.encoding, t.origin, spell(tid))


def _member_rows(g: M.TypeGraph):
    for tid, t in enumerate(g.types):
        if t.members:
            for i, m in enumerate(t.members):
                yield (tid, i, m.name, m.type, m.bit_offset, m.bit_size)


def _enum_rows(g: M.TypeGraph):
    for tid, t in enumerate(g.types):
        if t.enumerators:
            for i, (name, value) in enumerate(t.enumerators):
                yield (tid, i, name, str(value))


def _param_rows(g: M.TypeGraph):
    for tid, t in enumerate(g.types):
        if t.kind == M.FUNC_PROTO and t.params:
            for i, p in enumerate(t.params):
                yield (tid, i, p.name, p.type)


def _function_rows(g: M.TypeGraph):
    for i, f in enumerate(g.functions):
        yield (i + 1, f.name, f.proto, int(f.static), f.file, f.line, f.module)


# ---------------------------------------------------------------------------
# the surftrace face

def surftrace_struct_ids(g: M.TypeGraph) -> dict:
    """name (`struct X`, `union X`, or the typedef name of an anonymous struct) -> type id.
    When a name has several layouts, the first in graph order wins (deterministic)."""
    chosen: dict = {}
    for tid, t in enumerate(g.types):
        k = t.kind
        if k in M.COMPOSITE and t.name and t.size is not None:
            chosen.setdefault(f"{k} {t.name}", tid)
        elif k == M.TYPEDEF and t.name:
            target = g.types[t.ref] if t.ref is not None else None
            if target is not None and target.kind in M.COMPOSITE and not target.name:
                chosen.setdefault(t.name, t.ref)
    return chosen


def flat_members(g: M.TypeGraph, tid: int, prefix: str = "", base_bits: int = 0, spell=None):
    """Leaf members of a struct/union, flattened surftrace-style: members of embedded
    (non-pointer, non-typedef) structs/unions as `outer.inner` with absolute offsets;
    members of anonymous structs/unions without a prefix.
    Yields (name, type_string, byte_offset, bytes, bits)."""
    spell = spell or g.type_name
    types = g.types
    for m in types[tid].members or ():
        bit_off = base_bits + m.bit_offset
        mt = m.type
        # peel qualifiers and array dimensions to find the element type
        dims = []
        t = types[mt]
        while t.kind in M.QUALIFIERS or t.kind == M.ARRAY:
            if t.kind == M.ARRAY:
                dims.append(t.nelems or 0)
            mt = t.ref
            t = types[mt]
        if not dims and t.kind in M.COMPOSITE and (m.name is None or t.members):
            inner_prefix = prefix if m.name is None else f"{prefix}{m.name}."
            if t.members:
                yield from flat_members(g, mt, inner_prefix, bit_off, spell)
                continue
        name = (prefix + (m.name or "")) + "".join(f"[{d}]" for d in dims)
        total = g.sizeof(m.type) or 0
        if m.bit_size:
            unit = g.sizeof(mt) or 4
            unit_bits = unit * 8
            start = (bit_off // unit_bits) * unit_bits
            # keep the whole bitfield inside one storage unit
            if bit_off + m.bit_size > start + unit_bits:
                start = bit_off - (bit_off % 8)
            yield (name, spell(mt), start // 8, unit,
                   f"{bit_off - start}:{m.bit_size}")
        else:
            yield (name, spell(mt), bit_off // 8, total, "")


def _surftrace_rows(g: M.TypeGraph, spell):
    """(files, funs, structs, members, types) row lists, tuples in column order."""
    files: dict = {}
    funs = []
    for f in g.functions:
        proto = g.types[f.proto]
        fid = files.setdefault(f.file or "", len(files) + 1)
        args = [spell(p.type) for p in (proto.params or [])]
        if proto.variadic:
            args.append("...")
        ret = spell(proto.ref if proto.ref is not None else 0)
        funs.append((f.name, json.dumps(args), ("static " + ret) if f.static else ret,
                     f.line, fid, f.module))
    structs, members = [], []
    for sid, (name, tid) in enumerate(sorted(surftrace_struct_ids(g).items()), start=1):
        rows = list(flat_members(g, tid, spell=spell))
        structs.append((sid, name, len(rows), g.types[tid].size))
        # flat_members yields (name, type, ...); the table's columns are (fid, types, name, ...)
        members.extend((sid, tstr, mname, off, nbytes, bits)
                       for (mname, tstr, off, nbytes, bits) in rows)
    types_rows: dict = {}
    for tid, t in enumerate(g.types):
        if t.kind in (M.INT, M.FLOAT, M.TYPEDEF, M.ENUM, M.PTR, M.VOID):
            name = spell(tid)
            if name not in types_rows:
                types_rows[name] = (spell(g.strip(tid)), g.sizeof(tid) or 0)
    types_rows.setdefault("void *", ("void *", 8))
    trow = [(i, name, alias, size)
            for i, (name, (alias, size)) in enumerate(types_rows.items(), start=1)]
    frow = [(i, name) for name, i in files.items()]
    return frow, funs, structs, members, trow


def spelling_cache(g: M.TypeGraph):
    """A memoized `g.type_name` (each id is spelled once)."""
    return g.spelling_cache()


# ---------------------------------------------------------------------------

def write_db(graph: M.TypeGraph, meta: dict, dest: str) -> dict:
    """Write `graph` and `meta` to `dest` atomically (temp file + rename).
    Returns the meta as written (with the counts and schema version added)."""
    dest_dir = os.path.dirname(os.path.abspath(dest)) or "."
    os.makedirs(dest_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".db", dir=dest_dir)
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            create_tables, create_indexes = _ddl()
            for stmt in create_tables:
                conn.execute(stmt)
            meta = dict(meta)
            meta.setdefault("schema_version", SCHEMA_VERSION)
            meta.setdefault("type_source", graph.source)
            meta["types"] = str(len(graph.types))
            meta["functions"] = str(len(graph.functions))
            meta["structs"] = str(sum(1 for t in graph.types
                                      if t.kind in M.COMPOSITE and t.size is not None))
            _bulk(conn, "meta", ((k, None if v is None else str(v))
                                 for k, v in sorted(meta.items())))
            spell = spelling_cache(graph)
            _bulk(conn, "kt_types", _type_rows(graph, spell))
            _bulk(conn, "kt_members", _member_rows(graph))
            _bulk(conn, "kt_enumerators", _enum_rows(graph))
            _bulk(conn, "kt_params", _param_rows(graph))
            _bulk(conn, "kt_functions", _function_rows(graph))
            for name, rows in zip(("files", "funs", "structs", "members", "types"),
                                  _surftrace_rows(graph, spell)):
                _bulk(conn, name, rows)
            for stmt in create_indexes:
                conn.execute(stmt)
            conn.commit()
        finally:
            conn.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)     # mkstemp made it 0600
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return meta


def _bulk(conn: sqlite3.Connection, table: str, rows: Iterable[dict]) -> None:
    conn.executemany(_insert_sql(table), rows)


# ---------------------------------------------------------------------------
# reading back

def read_meta(path: str) -> dict:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT key, value FROM meta"))
    finally:
        conn.close()


def load_graph(path: str) -> M.TypeGraph:
    """The whole TypeGraph stored in a DB (for tests, comparisons and `dbhive show`)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        g = M.TypeGraph(types=[], source=dict(conn.execute(
            "SELECT key, value FROM meta")).get("type_source", ""))
        for (tid, kind, name, size, ref, nelems, variadic, signed, encoding, origin) in conn.execute(
                "SELECT id, kind, name, size, ref, nelems, variadic, signed, encoding, origin "
                "FROM kt_types ORDER BY id"):
            assert tid == len(g.types)
            g.types.append(M.Type(kind=sys_intern(kind), name=name, size=size, ref=ref,
                                  nelems=nelems, variadic=bool(variadic),
                                  signed=None if signed is None else bool(signed),
                                  encoding=encoding, origin=origin))
        for tid, name, mtype, boff, bsize in conn.execute(
                "SELECT type_id, name, member_type, bit_offset, bit_size FROM kt_members "
                "ORDER BY type_id, idx"):
            t = g.types[tid]
            if t.members is None:
                t.members = []
            t.members.append(M.Member(name, mtype, boff, bsize))
        for tid, name, value in conn.execute(
                "SELECT type_id, name, value FROM kt_enumerators ORDER BY type_id, idx"):
            t = g.types[tid]
            if t.enumerators is None:
                t.enumerators = []
            t.enumerators.append((name, int(value)))
        for tid, name, ptype in conn.execute(
                "SELECT proto_id, name, param_type FROM kt_params ORDER BY proto_id, idx"):
            t = g.types[tid]
            if t.params is None:
                t.params = []
            t.params.append(M.Param(name, ptype))
        for t in g.types:
            if t.kind == M.FUNC_PROTO and t.params is None:
                t.params = []
        for name, proto, static, file, line, module in conn.execute(
                "SELECT name, proto, static, file, line, module FROM kt_functions ORDER BY id"):
            g.functions.append(M.Function(name, proto, bool(static), file, line, module))
        return g
    finally:
        conn.close()


_KIND_INTERN = {k: k for k in M.KINDS}


def sys_intern(kind: str) -> str:
    """Return the model's own kind string so `is` comparisons work on loaded graphs."""
    return _KIND_INTERN.get(kind, kind)
