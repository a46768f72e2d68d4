"""The DB writer's fast paths (dbhive/store.py, model spelling, surftrace flattening) against
the plain ones they replace, on real kernels' BTF: the memoized spelling against c_decl for
every type, the DB written by two processes against the DB written by one, NULL written
as NULL.  (The figures are bench/bench_btf.py's.)"""
from __future__ import annotations

import sqlite3

import pytest

from dbhive import model as M
from dbhive import schema as S
from dbhive import store
from dbhive.btf import read_btf, read_btf_file
from tests.support.db_dump import diff_dbs


@pytest.fixture
def writer_threads(monkeypatch) -> list:
    """A list that grows by one each time write_db starts its C writer thread (so that a
    test of the threaded path cannot pass on the one-thread path)."""
    started: list = []
    real = store._Sink.__init__

    def counted(self, conn, path, threaded):
        real(self, conn, path, threaded)
        if self.writer is not None:
            started.append(path)
    monkeypatch.setattr(store._Sink, "__init__", counted)
    return started


@pytest.fixture(scope="module", params=["running", "debian"])
def graph(request, running_btf, debian_vmlinux_btf):
    path = running_btf if request.param == "running" else debian_vmlinux_btf
    return read_btf(read_btf_file(path), path)


def test_spelling_cache_is_c_decl_for_every_type(graph):
    spell = graph.spelling_cache()
    # in reverse too: the memo must not depend on which ids were spelled first
    ids = list(range(len(graph.types)))
    for order in (ids, ids[::-1]):
        fresh = graph.spelling_cache()
        assert [fresh(tid) for tid in order] == [M.c_decl(graph, tid, "") for tid in order]
    assert spell(0) == "void"


def _pointer_chain(n: int) -> tuple:
    g = M.TypeGraph()
    tid = g.add(M.Type(M.INT, "int", 4, signed=True, encoding="signed"))
    for _ in range(n):
        tid = g.add(M.Type(M.PTR, ref=tid))
    return g, tid


@pytest.mark.parametrize("depth", [M.MAX_DECL_DEPTH - 1, M.MAX_DECL_DEPTH,
                                   M.MAX_DECL_DEPTH + 1, 3 * M.MAX_DECL_DEPTH])
def test_spelling_refuses_what_c_decl_refuses(depth):
    """A declarator nested too deep (what a reference cycle looks like) is refused by the
    memoized spelling exactly where c_decl refuses it, whether or not the inner types
    were spelled before."""
    g, top = _pointer_chain(depth)
    try:
        expected = M.c_decl(g, top, "")
    except M.TypeCycle:
        expected = M.TypeCycle
    for warm in (False, True):
        spell = g.spelling_cache()
        if warm:                        # an inner type (spellable on its own) first
            spell(min(top // 2, 100))
        if expected is M.TypeCycle:
            with pytest.raises(M.TypeCycle):
                spell(top)
        else:
            assert spell(top) == expected


@pytest.mark.skipif(store.c_bulk() is None, reason="the C bulk loader is not built")
def test_the_writer_thread_writes_the_db_one_thread_writes(graph, tmp_path, writer_threads):
    """SQLite on a thread of its own (_cbulk.Writer) while the rows are made: the same DB,
    rows, rowids and the order of sqlite_master included."""
    one, two = str(tmp_path / "one.db"), str(tmp_path / "two.db")
    store.write_db(graph, {"release": "x"}, one, parallel=False)
    assert writer_threads == []
    store.write_db(graph, {"release": "x"}, two, parallel=True)
    assert len(writer_threads) == 1
    assert diff_dbs(one, two, ignore_meta=()) == []


def test_null_is_written_as_null(graph, tmp_path):
    """NULL goes through a float stand-in (schema.insert_sql): no float is left in any
    table, and each column holds as many NULLs as the graph has Nones."""
    db = str(tmp_path / "x.db")
    store.write_db(graph, {"release": "x"}, db)
    conn = sqlite3.connect(db)
    try:
        for t in S.TABLES:
            for col in t.column_names:
                # names from the schema's own declarations
                n = conn.execute(f"SELECT count(*) FROM {t.name} WHERE typeof({col}) = 'real'"
                                 ).fetchone()[0]
                assert n == 0, (t.name, col)
        nulls = dict(zip(("name", "size", "ref", "nelems", "signed", "encoding", "origin"),
                         conn.execute("SELECT count(*) - count(name), count(*) - count(size), "
                                      "count(*) - count(ref), count(*) - count(nelems), "
                                      "count(*) - count(signed), count(*) - count(encoding), "
                                      "count(*) - count(origin) FROM kt_types").fetchone()))
    finally:
        conn.close()
    assert nulls == {f: sum(getattr(t, f) is None for t in graph.types) for f in nulls}
    assert nulls["name"] > 0 and nulls["origin"] == len(graph.types)     # BTF has no origin


def _two_faults() -> M.TypeGraph:
    """A graph whose flattening fails (structs nested deeper than surftrace.MAX_NESTING)
    and whose types table fails too (a typedef naming itself: write_db is handed graphs
    the readers checked, this one is not)."""
    from dbhive import surftrace
    g = M.TypeGraph()
    inner = g.add(M.Type(M.INT, "int", 4, signed=True, encoding="signed"))
    for i in range(surftrace.MAX_NESTING + 10):
        inner = g.add(M.Type(M.STRUCT, f"s{i}", 4, members=[M.Member("m", inner, 0)]))
    loop = len(g.types)
    g.add(M.Type(M.TYPEDEF, "t", ref=loop))
    return g


def test_the_writer_thread_raises_the_error_one_thread_raises(tmp_path, monkeypatch,
                                                             writer_threads):
    """One thread meets the flattening's error before the types table's; with the writer
    thread the other error must not win."""
    from dbhive.errors import DbhiveError
    monkeypatch.setattr(store, "PARALLEL_MIN_TYPES", 0)   # a small graph: the thread anyway
    errors = []
    for parallel in (False, True):
        with pytest.raises(DbhiveError) as e:
            store.write_db(_two_faults(), {"release": "x"}, str(tmp_path / "x.db"),
                           parallel=parallel)
        errors.append((type(e.value), str(e.value)))
    assert len(writer_threads) == (store.c_bulk() is not None)   # the second: two threads
    assert errors[0] == errors[1]
    assert "nested more than" in errors[0][1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


needs_c_loader = pytest.mark.skipif(store.c_bulk() is None, reason="the C bulk loader is not built")


@needs_c_loader
@pytest.mark.parametrize("parallel", [False, True])
def test_the_c_loader_writes_the_db_the_sqlite3_module_writes(graph, tmp_path, monkeypatch,
                                                             writer_threads, parallel):
    """dbhive/_cbulk.c against the sqlite3 module (DBHIVE_BULK_PURE=1): the same DB, rows,
    SQLite types, rowids and sqlite_master order; and the comparison sees one value
    changed."""
    c_db, py_db = str(tmp_path / "c.db"), str(tmp_path / "py.db")
    store.write_db(graph, {"release": "x"}, c_db, parallel=parallel)
    monkeypatch.setenv("DBHIVE_BULK_PURE", "1")
    assert store.c_bulk() is None
    store.write_db(graph, {"release": "x"}, py_db, parallel=parallel)
    assert len(writer_threads) == (1 if parallel else 0)     # the module path has no thread
    assert diff_dbs(c_db, py_db, ignore_meta=()) == []
    conn = sqlite3.connect(c_db)
    conn.execute("UPDATE kt_members SET bit_offset = bit_offset + 1 WHERE type_id = "
                 "(SELECT max(type_id) FROM kt_members)")
    conn.commit()
    conn.close()
    assert diff_dbs(c_db, py_db, ignore_meta=()) != []


def _load_outcome(path: str, rows: list):
    """What _bulk_all makes of `rows` (kt_enumerators rows) in a fresh DB: the rows read
    back with their SQLite types, or the exception raised."""
    conn = sqlite3.connect(path)
    try:
        store._create_tables(conn)
        try:
            store._bulk_all(conn, path, [(S.KT_ENUMERATORS, rows)])
            conn.commit()
        except Exception as e:          # noqa: BLE001 - compared
            return type(e)
        return conn.execute("SELECT type_id, idx, name, value, typeof(value) FROM "
                            "kt_enumerators ORDER BY type_id, idx").fetchall()
    finally:
        conn.close()


@needs_c_loader
@pytest.mark.parametrize("odd", [1 << 70, "\ud800", b"blob", True, 2.5, None, "é\x00x",
                                 ("short",)])
def test_the_c_loader_leaves_what_it_cannot_bind_alike_to_the_sqlite3_module(
        tmp_path, monkeypatch, odd):
    """A value the C loader does not bind the way the module does (too big an int, a lone
    surrogate, bytes, a row of the wrong length) after good rows: the loader's transaction
    is rolled back and the module writes (or refuses) it, so the outcome is the module's;
    the values it binds itself (bool, float, None, NUL in text) come out as the module's."""
    good = [(1, i, f"E{i}", str(i)) for i in range(2000)]
    bad = (1, 2000, "odd", odd) if not isinstance(odd, tuple) else odd
    rows = good + [bad] + [(1, 2001, "after", "1")]
    got = _load_outcome(str(tmp_path / "c.db"), rows)
    monkeypatch.setenv("DBHIVE_BULK_PURE", "1")
    want = _load_outcome(str(tmp_path / "py.db"), rows)
    assert got == want
    assert isinstance(want, type) or len(want) == 2002


@pytest.mark.parametrize("parallel", [False, True])
def test_a_value_only_the_sqlite3_module_binds_ends_the_writer_thread(
        tmp_path, monkeypatch, writer_threads, parallel):
    """A name SQLite cannot take from the C code (a lone surrogate) in kt_types: the thread
    is given nothing of that table; what it was given is committed first and the rest is
    written here, where the sqlite3 module raises its UnicodeEncodeError, as it does in
    one thread; no file is left."""
    monkeypatch.setattr(store, "PARALLEL_MIN_TYPES", 0)
    g = M.TypeGraph()
    g.add(M.Type(M.INT, "int", 4, signed=True, encoding="signed"))
    g.add(M.Type(M.STRUCT, "bad\ud800", 4, members=[M.Member("m", 1, 0)]))
    with pytest.raises(UnicodeEncodeError):
        store.write_db(g, {"release": "x"}, str(tmp_path / "x.db"), parallel=parallel)
    assert len(writer_threads) == (1 if parallel and store.c_bulk() else 0)
    assert list(tmp_path.iterdir()) == []


@needs_c_loader
def test_the_writer_thread_reports_sqlites_error_and_commits_nothing(tmp_path):
    """A statement SQLite refuses (a second table of the same name) after good rows: finish()
    raises SQLite's error, and the rows before it are not committed."""
    path = str(tmp_path / "x.db")
    conn = sqlite3.connect(path)
    store._create_tables(conn)
    conn.commit()
    rows = [(1, i, f"E{i}", str(i)) for i in range(20000)]
    w = store.c_bulk().Writer(path)
    assert w.rows((S.insert_select_sql(S.KT_ENUMERATORS, (), "dbhive_rows(?)"), 4, rows))
    w.sql(S.create_table_sql(S.KT_ENUMERATORS))
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        w.finish()
    assert conn.execute("SELECT count(*) FROM kt_enumerators").fetchone()[0] == 0
    w2 = store.c_bulk().Writer(path)
    assert w2.rows((S.insert_select_sql(S.KT_ENUMERATORS, (), "dbhive_rows(?)"), 4, rows))
    w2.finish()
    assert conn.execute("SELECT count(*), sum(idx) FROM kt_enumerators").fetchone() == \
        (20000, sum(range(20000)))
    conn.close()


def test_lookups_by_name_use_the_partial_index(graph, tmp_path):
    # kt_types_name holds only the named types (schema.py): every lookup by name the
    # readers make must still be one SQLite answers from it, and with the same rows as a
    # scan of the table (the index left out)
    from dbhive.btf import dbview
    from resolver import kernel
    db = str(tmp_path / "k.db")
    store.write_db(graph, {"release": "x"}, db)
    name = next(t.name for t in graph.types if t.kind == M.STRUCT and t.name)
    queries = [(kernel._SQL_BY_NAME, (name, M.STRUCT)), (kernel._SQL_LAYOUTS, (name, M.STRUCT)),
               (dbview._SQL_NAMED, (name,)), (dbview._SQL_FLAVOURED, (name, name + "~"))]
    conn = sqlite3.connect(db)
    try:
        with_index = []
        for sql, args in queries:
            plan = " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
            assert "INDEX kt_types_name" in plan, (sql, plan)
            with_index.append(conn.execute(sql, args).fetchall())
        conn.execute("DROP INDEX kt_types_name")
        assert [conn.execute(sql, args).fetchall() for sql, args in queries] == with_index
        assert with_index[0] and with_index[2]
    finally:
        conn.close()
