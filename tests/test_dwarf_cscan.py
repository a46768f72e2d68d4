"""The C scanner (dbhive/dwarf/_cscan.c) against the pure-Python one (scan.py, the
reference), and skipping definitions already seen against reading every one.

Both must give the same records unit by unit, the same graph, and on damaged input the
same outcome (equal records, or both a FormError): on the generated fixtures (DWARF 2-5,
type units, dwz, split DWARF, clang, kbuild modules), the real Debian bridge.ko and the
Debian 6.1 vmlinux."""
from __future__ import annotations

import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbhive.dwarf import keys, reader as R
from dbhive.dwarf.api import _bulk_mode
from tests.test_dwarf import FIXTURES, debian_ko, dwarf_fixtures, fuzz_seeds  # noqa: F401


def test_the_c_scanner_is_built():
    # CI installs with a compiler: a missing extension would silently be the slow path
    assert R._cscan is not None, "dbhive/dwarf/_cscan.c was not built"
    assert R.Reader.__init__ and R.c_scanner()


def _records(path, c: bool, every: int = 1):
    rd = R.Reader(str(path))
    rd.c = c
    out = []
    for u in rd.units[::every]:
        try:
            out.append(rd.scan(u).records)
        except R.UnitError as e:
            out.append(("error", e.offset))
    return out


def _graph(path, c: bool, skip: bool):
    rd = R.Reader(str(path))
    rd.c, rd.skip_seen = c, skip
    units = [i for i, u in enumerate(rd.units) if rd.is_compile_unit(u)]
    units += [i for i, u in enumerate(rd.units) if not rd.is_compile_unit(u)]
    rd.prepare_origins()
    with _bulk_mode():
        res = rd.process(units)
        return keys.finalize(res.t, res.function_list())


def _same_graph(a, b):
    assert len(a.types) == len(b.types)
    assert a.types == b.types
    assert a.functions == b.functions


@pytest.mark.parametrize("name", FIXTURES)
def test_same_records_and_graph_on_fixtures(dwarf_fixtures, name):
    path = dwarf_fixtures[name]
    c, py = _records(path, True), _records(path, False)
    assert c == py
    assert sum(len(r) for r in c if isinstance(r, dict)) > 0
    ref = _graph(path, False, False)
    for c_scan, skip in ((True, True), (True, False), (False, True)):
        _same_graph(_graph(path, c_scan, skip), ref)


def test_same_records_and_graph_on_a_real_module(debian_ko):
    assert _records(debian_ko, True) == _records(debian_ko, False)
    _same_graph(_graph(debian_ko, True, True), _graph(debian_ko, False, False))


@pytest.mark.slow
def test_same_records_and_graph_on_the_debian_vmlinux(debian_vmlinux):
    # every 20th unit scanned both ways; the whole file read with the C scanner and
    # skipping vs the pure-Python scanner reading every definition
    assert _records(debian_vmlinux, True, 20) == _records(debian_vmlinux, False, 20)
    fast = _graph(debian_vmlinux, True, True)
    _same_graph(fast, _graph(debian_vmlinux, False, False))
    assert len(fast.types) > 50000


def test_the_comparison_sees_a_difference(dwarf_fixtures):
    # the check can fail: one member's name changed in one record
    path = dwarf_fixtures["user-dwarf5"]
    c = _records(path, True)
    unit = next(r for r in c if isinstance(r, dict) and any(
        rec[0] == 5 and rec[5] for rec in r.values()))
    off, rec = next((o, r) for o, r in unit.items() if r[0] == 5 and r[5])
    members = list(rec[5])
    members[0] = "renamed"
    unit[off] = rec[:5] + (members,) + rec[6:]
    assert c != _records(path, False)


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_damaged_input_same_outcome(tmp_path, fuzz_seeds, data):
    raw, ranges = fuzz_seeds[data.draw(st.integers(0, len(fuzz_seeds) - 1))]
    buf = bytearray(raw)
    start, size = ranges[data.draw(st.integers(0, len(ranges) - 1))]
    for _ in range(data.draw(st.integers(1, 8))):
        buf[start + data.draw(st.integers(0, size - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "damaged"
    path.write_bytes(bytes(buf))
    try:
        c = _records(path, True)
    except R.UnitError:
        c = "error"
    try:
        py = _records(path, False)
    except R.UnitError:
        py = "error"
    # an error in a unit is an error in both (offsets may differ: the Python scanner
    # reports a truncated read at the unit, the C one at the byte)
    norm = (lambda rs: rs if isinstance(rs, str) else
            [r if isinstance(r, dict) else "error" for r in rs])
    assert norm(c) == norm(py)


@pytest.mark.parametrize("name", ["user-dwarf2", "user-dwarf5", "user-clang5", "user-dwz5",
                                  "kmod-dwarf5"])
def test_same_abbreviation_tables(dwarf_fixtures, name):
    from dbhive.dwarf import forms
    rd = R.Reader(str(dwarf_fixtures[name]))
    for u in rd.units:
        ab = u.file.abbrev
        c = forms._c_parse_abbrevs(ab, u.abbrev_offset, len(ab))
        saved, forms._c_parse_abbrevs = forms._c_parse_abbrevs, None
        try:
            py = forms.parse_abbrev_table(ab, u.abbrev_offset, len(ab))
        finally:
            forms._c_parse_abbrevs = saved
        assert {e[0]: (e[1], e[2], e[3]) for e in c} == \
            {k: (a.tag, a.children, a.specs) for k, a in py.items()}


def test_same_relocated_debug_sections(debian_ko, dwarf_fixtures, monkeypatch):
    # a module's .debug_* with its relocations applied: the C loop vs the Python one
    from dbhive import elf
    assert elf._c_relocs is not None
    for path in (debian_ko, dwarf_fixtures["kmod-dwarf4"], dwarf_fixtures["kmod-dwarf5"]):
        names = [".debug_info", ".debug_line", ".debug_str_offsets", ".debug_ranges",
                 ".debug_rnglists", ".debug_loclists"]
        with elf.ElfFile(path) as e:
            c = {n: e.relocated_section(n) for n in names}
        with monkeypatch.context() as mp:
            mp.setattr(elf, "_c_relocs", None)
            with elf.ElfFile(path) as e:
                py = {n: e.relocated_section(n) for n in names}
        assert c == py
        assert c[".debug_info"] and any(c.values())
        with elf.ElfFile(path) as e:
            assert c[".debug_info"] != bytes(e.section_data(".debug_info"))  # relocated


def _readelf_func_names(path) -> set:
    # the oracle: binutils' readelf, the defined FUNC entries of .symtab
    out = subprocess.run(["readelf", "-sW", path], capture_output=True, text=True,
                         check=True).stdout
    names, in_symtab = set(), False
    for line in out.splitlines():
        if line.startswith("Symbol table"):
            in_symtab = "'.symtab'" in line
            continue
        f = line.split(None, 7)           # a Go name may hold spaces: the rest is the name
        if in_symtab and len(f) == 8 and f[0].endswith(":") and f[3] == "FUNC" \
                and f[6] != "UND":
            names.add(f[7])
    return names


def test_same_function_symbol_names(debian_vmlinux, debian_ko, monkeypatch):
    # elf.func_symbol_names (on every DWARF read's serial path): the C loop vs the Python
    # one vs readelf, on 64-bit little-endian (vmlinux, bridge.ko, a dynamically linked
    # program: undefined FUNC entries), 32-bit (Go 386) and big-endian (Go s390x) files
    from dbhive import elf
    from tests.support.go_builds import binary
    from tests.support.uprobe_builds import program
    assert elf._c_func_symbol_names is not None
    paths = [debian_vmlinux, debian_ko, program("pie"), binary("1.24", "uprobeapp", "386"),
             binary("1.24", "uprobeapp", "s390x")]
    for path in paths:
        with elf.ElfFile(path) as e:
            c = e.func_symbol_names()
            assert (e.is64, e.little_endian) in ((True, True), (False, True), (True, False))
        with monkeypatch.context() as mp:
            mp.setattr(elf, "_c_func_symbol_names", None)
            with elf.ElfFile(path) as e:
                py = e.func_symbol_names()
        assert len(c) > 5 and c == py == _readelf_func_names(str(path)), path


def test_same_key_merging(dwarf_fixtures, debian_ko):
    # KeyTable.merge and remap_key: the C loops vs the Python ones, on real key tables
    from dbhive.dwarf import keys as K
    tables = []
    for path in (debian_ko, dwarf_fixtures["user-dwarf5"], dwarf_fixtures["kmod-dwarf5"]):
        rd = R.Reader(str(path))
        with _bulk_mode():
            tables.append(rd.process(range(len(rd.units))).t)

    def merged(c):
        saved, K._c = K._c, c
        try:
            t = K.KeyTable()
            ms = [t.merge(x.keys, x.origins) for x in tables]
            remapped = [K.remap_key(k, ms[0]) for k in tables[0].keys]
            return t.keys, t.origins, ms, remapped
        finally:
            K._c = saved
    assert K._c is not None
    assert merged(K._c) == merged(None)


def test_same_finalizing(dwarf_fixtures, debian_ko):
    # keys.finalize with the C merging of identical keys vs the Python loop, on real key
    # tables (placeholders resolved to definitions, duplicates merged) and on one damaged
    from dbhive.dwarf import keys as K
    read = []
    for path in (debian_ko, dwarf_fixtures["user-dwarf5"], dwarf_fixtures["kmod-dwarf5"]):
        rd = R.Reader(str(path))
        with _bulk_mode():
            res = rd.process(range(len(rd.units)))
        read.append((res.t, res.function_list()))

    def final(table, functions, c):
        saved, K._c = K._c, c
        try:
            return K.finalize(table, functions)
        finally:
            K._c = saved
    assert K._c is not None
    for table, functions in read:
        _same_graph(final(table, functions, K._c), final(table, functions, None))
    table, functions = read[0]
    assert len(final(table, functions, K._c).types) < len(table.keys) - 100   # merges happen
    # the passes are the same: stopped after one, both have merged the same keys
    canon = [list(range(len(table.keys))) for _ in range(2)]
    K._c.merge_identical(table.keys, canon[0], 1)
    K.merge_identical(table.keys, canon[1], 1)
    roots = [[_root(c, i) for i in range(len(c))] for c in canon]
    assert roots[0] == roots[1]
    # a damaged table (a key whose id is past the end) is an IndexError both ways
    bad = list(table.keys)
    k = next(i for i, key in enumerate(bad) if key[0] == K.M.PTR)
    bad[k] = (bad[k][0], len(bad) + 5) + bad[k][2:]
    for merge in (K._c.merge_identical, K.merge_identical):
        with pytest.raises(IndexError):
            merge(bad, list(range(len(bad))), 8)


def test_same_merging_when_a_second_pass_merges(debian_ko):
    # merge_identical's C loop leaves out the pass that would change nothing (when the
    # forms of the roots whose ids led ahead hold); here one does change something: a
    # placeholder stands for a copy of its definition put at the end of a real key table
    # (as modules/merge.py's targets can), so a pointer to it equals the pointer to the
    # definition only once the copy merged into it, in the first pass, after the pointer
    from dbhive.dwarf import keys as K
    rd = R.Reader(str(debian_ko))
    with _bulk_mode():
        keys = list(rd.process(range(len(rd.units))).t.keys)
    first = {}
    for i, key in enumerate(keys):
        if key[0] == K.M.STRUCT and key[1] is not None:
            first.setdefault(key[1], i)
    index = {key: i for i, key in enumerate(keys)}
    cases = [(i, first[key[2]]) for i, key in enumerate(keys)
             if key[0] == K.M.FWD and key[1] == K.M.STRUCT and key[2] in first
             and (K.M.PTR, i) in index]
    assert len(cases) >= 3, cases
    targets = {}
    for fwd, definition in cases:
        targets[fwd] = len(keys)
        keys.append(keys[definition])          # the copy: a duplicate key, merged in pass 1
        if (K.M.PTR, definition) not in index:  # and a pointer to the definition
            index[(K.M.PTR, definition)] = len(keys)
            keys.append((K.M.PTR, definition))
    canon = [list(range(len(keys))) for _ in range(3)]
    for c in canon:
        K._c.placeholder_targets(keys, c, targets)
    K._c.merge_identical(keys, canon[0], 1)
    K._c.merge_identical(keys, canon[1], 8)
    K.merge_identical(keys, canon[2], 8)
    roots = [[_root(c, i) for i in range(len(c))] for c in canon]
    assert roots[1] == roots[2]
    assert roots[0] != roots[1]                # the second pass merged the pointers
    for fwd, definition in cases:
        assert roots[1][index[(K.M.PTR, fwd)]] == roots[1][index[(K.M.PTR, definition)]]


def _root(canon, i):
    while canon[i] != i:
        i = canon[i]
    return i
