"""DWARF reader on generated fixtures (DWARF 4/5, type units, dwz, split DWARF, compressed
sections, kbuild modules), a real Debian module, bad input and fuzzed input.

Fixtures are compiled from data/dwarf-src/ by scripts/make_dwarf_fixtures.py; the oracle is
pahole (tests/pahole_oracle.py).  The whole-vmlinux checks are in test_dwarf_vmlinux.py."""
from __future__ import annotations

import os
import shutil
import signal
import struct

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbhive import model as M
from dbhive.dwarf import DwarfError, has_dwarf, read_dwarf
from scripts.realdata import DEBIAN_RELEASE, deb_member
from tests.support import need_tool
from tests.support.pahole_compare import compare_with_pahole, pahole_view
from tests.support.pahole_oracle import pahole_layouts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KO_MEMBER = f"/usr/lib/debug/lib/modules/{DEBIAN_RELEASE}/kernel/net/bridge/bridge.ko"

# fixture -> the file pahole reads instead (pahole 1.24 aborts on .debug_types, prints
# nothing for dwz files, and does not read .dwo files; these are the same sources built
# without that feature)
ORACLE_INPUT = {"user-dwarf4-types": "user-dwarf4", "user-dwarf5-types": "user-dwarf5",
                "user-dwz4": "user-dwz4.before-dwz", "user-dwz5": "user-dwz5.before-dwz",
                "user-split-a.dwo": "user-a.o"}
FIXTURES = ["user-dwarf2", "user-dwarf4", "user-dwarf5", "user-dwarf4-types", "user-dwarf5-types",
            "user-gz", "user-clang5", "user-dwz4", "user-dwz5", "user-split-a.dwo", "kmod-dwarf4",
            "kmod-dwarf5"]


@pytest.fixture(scope="session")
def dwarf_fixtures() -> dict:
    for tool in ("gcc", "clang", "dwz", "pahole", "make"):
        need_tool(tool)
    from scripts import make_dwarf_fixtures
    return make_dwarf_fixtures.build()


@pytest.fixture(scope="session")
def debian_ko(debian_dbg_deb) -> str:
    return deb_member(debian_dbg_deb, KO_MEMBER, f"bridge-{DEBIAN_RELEASE}.ko")


def _layouts(g: M.TypeGraph) -> set:
    return {(t.kind, t.name, t.size, tuple(pahole_view(g, tid)).__repr__())
            for tid, t in g.named(M.COMPOSITE) if t.size is not None}


def _functions(g: M.TypeGraph) -> list:
    return sorted((f.name, g.type_name(f.proto), f.static, f.file, f.line)
                  for f in g.functions)


# ---------------------------------------------------------------------------
# exactness against pahole

@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_layouts_equal_pahole(dwarf_fixtures, name):
    g = read_dwarf(dwarf_fixtures[name])
    assert g.source == "dwarf"
    oracle = pahole_layouts(dwarf_fixtures[ORACLE_INPUT.get(name, name)], "dwarf")
    result = compare_with_pahole(g, oracle)
    assert result["problems"] == []
    assert result["checked"] >= 70


@pytest.mark.parametrize("name", ["user-dwarf4-types", "user-dwarf5-types", "user-dwz4",
                                  "user-dwz5", "user-gz"])
def test_fixture_variants_read_like_the_plain_build(dwarf_fixtures, name):
    """Type units, dwz and compression change the encoding, not the types: the struct
    layouts and functions equal those of the plain build of the same sources."""
    plain_name = {"user-dwarf4-types": "user-dwarf4", "user-dwz4": "user-dwz4.before-dwz",
                  "user-dwz5": "user-dwz5.before-dwz"}.get(name, "user-dwarf5")
    g, plain = read_dwarf(dwarf_fixtures[name]), read_dwarf(dwarf_fixtures[plain_name])
    assert _layouts(g) == _layouts(plain)
    assert _functions(g) == _functions(plain)
    # with type units GCC drops unused typedefs; whatever is there must be in the plain build
    def typedefs(x):
        return {(x.types[i].name, x.type_name(x.types[i].ref)) for i in range(len(x.types))
                if x.types[i].kind == M.TYPEDEF}
    assert typedefs(g) <= typedefs(plain)
    # a struct dwz moved to a partial unit is tagged with the unit that imports it (a type
    # unit has no such link: its types keep origin None)
    origins = {os.path.basename(t.origin or "-") for _, t in g.named() if t.name == "dup_layout"}
    assert origins == ({"-"} if "types" in name else {"types_a.c", "types_b.c"})


def test_fixture_shapes(dwarf_fixtures):
    """Facts about the sources that pahole does not show: same-name layouts kept with
    their unit, declaration vs definition, enums, functions with source positions."""
    g = read_dwarf(dwarf_fixtures["user-dwarf5"])
    dups = [t for _, t in g.named() if t.name == "dup_layout"]
    assert sorted(t.size for t in dups) == [16, 16]
    assert {os.path.basename(t.origin) for t in dups} == {"types_a.c", "types_b.c"}
    assert len({tuple(m.name for m in t.members) for t in dups}) == 2
    # declared in types_a.c, defined in types_b.c: the pointer reaches the definition
    holder = next(t for _, t in g.named() if t.name == "holder_a")
    target = g.types[g.types[holder.members[0].type].ref]
    assert (target.kind, target.name, target.size) == (M.STRUCT, "decl_elsewhere", 24)
    # the proto_ops_like pointer: only ever declared -> a forward declaration
    sock = next(t for _, t in g.named() if t.name == "sock_like")
    ops = next(m for m in sock.members if m.name == "sk_ops")
    assert g.type_name(ops.type) == "const struct proto_ops_like *"
    assert g.types[g.strip(g.types[g.types[ops.type].ref].ref)].kind == M.FWD
    enums = {t.name: t for _, t in g.named((M.ENUM,))}
    assert enums["sk_state"].enumerators == [("SS_FREE", 0), ("SS_UNCONNECTED", 1),
                                             ("SS_CONNECTED", 7), ("SS_NEG", -2)]
    assert enums["sk_state"].signed is True
    assert enums["big_values"].enumerators == [("BIG_ONE", 1), ("BIG_HIGH", 0xFFFFFFFF)]
    assert enums["big_values"].signed is False
    fns = {f.name: f for f in g.functions}
    assert set(fns) == {"use_a", "use_b", "main", "helper_static"}
    assert fns["helper_static"].static and not fns["use_a"].static
    assert g.types[fns["helper_static"].proto].variadic
    assert [p.name for p in g.types[fns["use_b"].proto].params] == ["sk", "u", "p"]
    assert os.path.basename(fns["use_b"].file) == "types_b.c"
    assert fns["use_b"].line == 10
    # a struct declared inside a function body is a type too
    assert any(t.name == "local_only" for _, t in g.named())


@pytest.mark.slow
def test_real_debian_module_equals_pahole(debian_ko):
    """A real .ko (ET_REL): its .rela.debug_* relocations must be applied."""
    with open(debian_ko, "rb") as fh:
        elf = ELFFile(fh)
        assert elf["e_type"] == "ET_REL"
        assert elf.get_section_by_name(".rela.debug_info") is not None
    g = read_dwarf(debian_ko, module="bridge")
    result = compare_with_pahole(g, pahole_layouts(debian_ko, "dwarf"))
    assert result["problems"] == []
    assert result["checked"] > 500
    assert g.functions and all(f.module == "bridge" for f in g.functions)
    names = {f.name for f in g.functions}
    assert {"br_dev_xmit", "br_handle_frame"} <= names


@pytest.mark.slow
def test_workers_do_not_change_the_graph(debian_ko):
    one = read_dwarf(debian_ko, jobs=1)
    two = read_dwarf(debian_ko, jobs=2)
    assert one.types == two.types
    assert one.functions == two.functions


def test_progress_callback(dwarf_fixtures):
    seen = []
    read_dwarf(dwarf_fixtures["user-dwarf5"], progress=lambda done, total: seen.append(
        (done, total)))
    assert seen and seen[-1][0] == seen[-1][1] == 2


# ---------------------------------------------------------------------------
# bad input: one clear DwarfError naming file, section and offset

def _section(path, name):
    with open(path, "rb") as fh:
        sec = ELFFile(fh).get_section_by_name(name)
        return sec["sh_offset"], sec["sh_size"]


def _patched(tmp_path, src, offset, data):
    dst = tmp_path / os.path.basename(src)
    shutil.copy(src, dst)
    with open(dst, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    return str(dst)


def test_not_elf_and_no_dwarf(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an elf file at all")
    assert not has_dwarf(junk)
    with pytest.raises(DwarfError, match="junk.*not a valid ELF"):
        read_dwarf(junk)
    stripped = tmp_path / "true"
    shutil.copy("/bin/true", stripped)
    assert not has_dwarf(stripped)
    with pytest.raises(DwarfError, match=r"true: \.debug_info .*no DWARF"):
        read_dwarf(stripped)
    with pytest.raises(DwarfError, match="missing"):
        read_dwarf(tmp_path / "missing")


def test_bad_abbreviation_code(tmp_path, dwarf_fixtures):
    src = dwarf_fixtures["user-dwarf5"]
    off, _ = _section(src, ".debug_info")
    # DWARF 5 compile unit header is 12 bytes; the unit DIE's code follows
    path = _patched(tmp_path, src, off + 12, b"\x7f")
    with pytest.raises(DwarfError) as info:
        read_dwarf(path)
    msg = str(info.value)
    assert path in msg and ".debug_info" in msg and "abbreviation code 127" in msg
    assert info.value.section == ".debug_info" and info.value.offset == 12


def test_unit_length_past_the_end(tmp_path, dwarf_fixtures):
    src = dwarf_fixtures["user-dwarf4"]
    off, _ = _section(src, ".debug_info")
    path = _patched(tmp_path, src, off, struct.pack("<I", 0x7FFFFFF0))
    with pytest.raises(DwarfError, match=r"\.debug_info at offset 0x0: unit runs past"):
        read_dwarf(path)


def test_reference_out_of_range(tmp_path, dwarf_fixtures):
    src = dwarf_fixtures["user-dwarf5"]
    sec_off, _ = _section(src, ".debug_info")
    with open(src, "rb") as fh:           # pyelftools locates a member's DW_AT_type (ref4)
        dwarf = ELFFile(fh).get_dwarf_info(relocate_dwarf_sections=False)
        cu = next(dwarf.iter_CUs())
        attr = next(die.attributes["DW_AT_type"] for die in cu.iter_DIEs()
                    if die.tag == "DW_TAG_member"
                    and die.attributes["DW_AT_type"].form == "DW_FORM_ref4")
    path = _patched(tmp_path, src, sec_off + attr.offset, struct.pack("<I", 0x7FFFFF00))
    with pytest.raises(DwarfError, match=r"\.debug_info at offset 0x[0-9a-f]+: reference to "
                                         r"0x7fffff00, outside every unit"):
        read_dwarf(path)


def test_truncated_file(tmp_path, dwarf_fixtures):
    src = dwarf_fixtures["user-dwarf5"]
    off, size = _section(src, ".debug_info")
    dst = tmp_path / "truncated"
    with open(src, "rb") as fh:
        dst.write_bytes(fh.read()[:off + size // 2])
    with pytest.raises(DwarfError, match="truncated"):
        read_dwarf(dst)


def test_missing_dwz_alt_file(tmp_path, dwarf_fixtures):
    dst = tmp_path / "user-dwz5"
    shutil.copy(dwarf_fixtures["user-dwz5"], dst)
    with pytest.raises(DwarfError, match=r"\.gnu_debugaltlink .*user-dwz5\.alt"):
        read_dwarf(dst)


# ---------------------------------------------------------------------------
# fuzz: mutated DWARF never hangs and never raises anything but DwarfError

FUZZ_SEEDS = {"user-dwarf4": (".debug_info", ".debug_abbrev", ".debug_str", ".debug_line"),
              "user-dwarf5-types": (".debug_info", ".debug_abbrev", ".debug_line",
                                    ".debug_line_str"),
              "user-clang5": (".debug_info", ".debug_abbrev", ".debug_str_offsets",
                              ".debug_line"),
              "user-split-a.dwo": (".debug_info.dwo", ".debug_abbrev.dwo",
                                   ".debug_str_offsets.dwo")}


@pytest.fixture(scope="module")
def fuzz_seeds(dwarf_fixtures):
    seeds = []
    for name, sections in FUZZ_SEEDS.items():
        src = dwarf_fixtures[name]
        with open(src, "rb") as fh:
            seeds.append((fh.read(), [_section(src, n) for n in sections]))
    return seeds


class _Hang(Exception):
    pass


def _alarm(_sig, _frame):
    raise _Hang()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_dwarf(tmp_path, fuzz_seeds, data):
    raw, ranges = fuzz_seeds[data.draw(st.integers(0, len(fuzz_seeds) - 1))]
    buf = bytearray(raw)
    which = data.draw(st.integers(0, len(ranges) - 1))
    start, size = ranges[which]
    for _ in range(data.draw(st.integers(1, 8))):
        pos = start + data.draw(st.integers(0, size - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()) and data.draw(st.booleans()):
        del buf[start + data.draw(st.integers(0, size - 1)):]
    path = tmp_path / "fuzzed"
    path.write_bytes(bytes(buf))
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    try:
        g = read_dwarf(path, jobs=1)
        assert isinstance(g, M.TypeGraph)
    except DwarfError as e:
        assert str(path) in str(e)
    except _Hang:
        pytest.fail("read_dwarf hung on mutated input")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
