"""Crafted type descriptors, made by script from real binaries (a copy with bytes patched at
the descriptor's own addresses): cycles, out-of-range pointers, huge counts, overlapping
fields, a broken Go 1.27 descriptor run, random damage.  Each gives a clear reason or
`unknown` and a fallback to the table — never a hang, a traceback or a wrong number."""
from __future__ import annotations

import shutil
import signal
import struct

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from dbhive.elf import ElfFile
from dbhive.errors import DbhiveError
from resolver.golang.cli import go_command
from resolver.golang.report import analyze_go_binary, open_types
from resolver.golang.typeinfo import TypeInfoError
from tests.support.go_builds import binary, go_version

FD, CONN = "internal/poll.FD", "crypto/tls.Conn"


@pytest.fixture
def alarm():
    """Fail (instead of hanging) if a walk does not end within 60 s."""
    def boom(*_):
        raise TimeoutError("descriptor walk did not terminate")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def patched(tmp_path, src, patches, name="bad"):
    """A copy of src with {vaddr: bytes} written at the vaddrs' file offsets."""
    out = tmp_path / name
    shutil.copy(src, out)
    img = ElfFile(src)
    data = bytearray(out.read_bytes())
    for vaddr, raw in patches.items():
        off = img.file_offset(vaddr)
        assert off is not None, hex(vaddr)
        data[off:off + len(raw)] = raw
    out.write_bytes(bytes(data))
    return str(out)


def layout_of(path, sname):
    types, _ = open_types(path)
    lay, why = types.find_struct(sname)
    assert lay is not None, why
    return types, lay


def fields_slice(types, lay):
    return lay.address + types.hsize + types.p          # (ptr, len, cap)


def q(*words):
    return struct.pack("<" + "Q" * len(words), *words)


def table_source(minor):
    return "table:" + go_version(minor)


def test_fields_pointer_out_of_range(tmp_path, alarm):
    src = binary("1.24", "tlsapp", "strip")
    types, lay = layout_of(src, FD)
    bad = patched(tmp_path, src, {fields_slice(types, lay): q(0x7FFF_FFFF_0000)})
    rep = analyze_go_binary(bad)
    e = rep.offsets["internal/poll.FD.Sysfd"]
    assert e["source"] == table_source("1.24") and e["offset"] == 16      # the fallback
    assert "unreadable" in e["typeinfo"] and "outside the type region" in e["typeinfo"]
    assert rep.offsets["crypto/tls.Conn.conn"]["source"] == "typeinfo"    # the rest still works


def test_huge_field_count(tmp_path, alarm):
    src = binary("1.24", "tlsapp", "strip")
    types, lay = layout_of(src, FD)
    at = fields_slice(types, lay)
    bad = patched(tmp_path, src, {at + 8: q(1 << 40, 1 << 40)})
    e = analyze_go_binary(bad).offsets["internal/poll.FD.Sysfd"]
    assert e["source"] == table_source("1.24")
    assert "claims 1099511627776 elements" in e["typeinfo"]


def test_overlapping_field_is_not_a_wrong_number(tmp_path, alarm):
    """Sysfd moved from 16 to 20 would overlap SysFile: the layout is refused, not served."""
    src = binary("1.24", "tlsapp", "strip")
    types, lay = layout_of(src, FD)
    ptr = types.word(fields_slice(types, lay))
    i = [f.name for f in lay.fields].index("Sysfd")
    bad = patched(tmp_path, src, {ptr + 24 * i + 16: q(20)})
    e = analyze_go_binary(bad).offsets["internal/poll.FD.Sysfd"]
    assert (e["offset"], e["source"]) == (16, table_source("1.24"))
    assert "does not fit" in e["typeinfo"]


def test_disagreement_is_reported(tmp_path, alarm):
    """A consistent but different layout (the last field moved into the tail padding) next to
    the binary's DWARF: reported as a conflict and a warning, DWARF's value kept."""
    src = binary("1.24", "tlsapp", "dwarf")
    types, lay = layout_of(src, CONN)
    last = lay.fields[-1]
    slack = lay.size - (last.offset + last.size)
    assert slack >= 4, lay.fields[-3:]
    ptr = types.word(fields_slice(types, lay))
    moved = last.offset + 4
    bad = patched(tmp_path, src, {ptr + 24 * (len(lay.fields) - 1) + 16: q(moved)})
    key = f"{CONN}.{last.name}"
    rep = analyze_go_binary(bad, offsets=[key, "crypto/tls.Conn.conn"])
    e = rep.offsets[key]
    assert (e["offset"], e["source"]) == (last.offset, "dwarf")
    assert e["conflicts"] == {"typeinfo": moved}
    assert any(key in w and "typeinfo says" in w for w in rep.warnings)
    res = CliRunner().invoke(go_command, [bad, "--offsets", _list(tmp_path, [key])])
    assert res.exit_code == 0 and f"CONFLICT typeinfo says {moved}" in res.output


def _list(tmp_path, keys):
    f = tmp_path / "keys.txt"
    f.write_text("\n".join(keys) + "\n")
    return str(f)


def test_cycles_terminate(tmp_path, alarm):
    """*poll.FD made to point at itself, and FD's first field typed FD: the closure walk ends,
    the lookup says why it found nothing, no layout is served."""
    src = binary("1.24", "tlsapp", "strip")
    types, lay = layout_of(src, FD)
    ptr_t = types.base + types.header(lay.address)[6]          # ptrToThis: *poll.FD
    fptr = types.word(fields_slice(types, lay))
    bad = patched(tmp_path, src, {ptr_t + types.hsize: q(ptr_t), fptr + 8: q(lay.address)})
    btypes, _ = open_types(bad)
    lay2, why = btypes.find_struct(FD)
    assert lay2 is None and why == f"no type descriptor for {FD}"
    walked = list(btypes.walk())
    assert len(walked) == len(set(walked)) > 1000
    assert FD not in {x.name for x in btypes.structs("internal/poll.*")}
    e = analyze_go_binary(bad).offsets["internal/poll.FD.Sysfd"]
    assert e["source"] == table_source("1.24")


def test_go127_broken_descriptor_run(tmp_path, alarm):
    """Go 1.27 keeps no typelinks: one descriptor with a huge method count breaks the walk to
    typedesclen.  The descriptors are then unavailable (with the reason); offsets fall back."""
    src = binary("1.27", "tlsapp", "strip")
    types, lay = layout_of(src, FD)
    ptr_t = types.base + types.header(lay.address)[6]          # *poll.FD, a typelink
    assert ptr_t in types.sorted_types()
    u = types.uncommon(ptr_t)
    bad = patched(tmp_path, src, {u + 4: struct.pack("<H", 0xFFFF)})
    rep = analyze_go_binary(bad)
    assert not rep.typeinfo["available"]
    assert "typedesclen" in rep.typeinfo["reason"]
    e = rep.offsets["internal/poll.FD.Sysfd"]
    assert (e["offset"], e["source"]) == (16, table_source("1.27"))
    with pytest.raises(TypeInfoError):
        open_types(bad)
    res = CliRunner().invoke(go_command, [bad, "--types"])
    assert res.exit_code == 1 and "type descriptors unavailable" in res.output
    assert "Traceback" not in res.output


def test_typelinks_out_of_range(tmp_path, alarm):
    """typelinks entries pointing past the type region are not typelinks: none are used."""
    src = binary("1.19", "tlsapp", "strip")
    types, _ = open_types(src)
    md = types.md
    img = ElfFile(src)
    words = struct.unpack("<60Q", img.read(md.address, 480))
    n = len(md.typelinks)                         # the typelinks slice: (ptr, len, cap)
    first_off = md.typelinks[0] - md.types
    j = next(i for i in range(1, 57) if words[i] == words[i + 1] == n
             and img.read(words[i - 1], 4) == struct.pack("<i", first_off))
    first = words[j - 1]
    bad = patched(tmp_path, src, {first: struct.pack("<i", 0x7FFFFFF0)})
    rep = analyze_go_binary(bad)
    assert rep.typeinfo["typelinks"] == 0
    e = rep.offsets["internal/poll.FD.Sysfd"]
    assert (e["offset"], e["source"]) == (16, table_source("1.19"))
    assert e["typeinfo"] == f"no type descriptor for {FD}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage(tmp_path, data):
    """Random bytes written over descriptors the report reads (the struct records, their field
    arrays and names): the report finishes, and any layout it still serves is one that also
    passed every consistency check — while the undamaged fields keep their real values."""
    src = binary("1.24", "tlsapp", "strip")
    types, lay = layout_of(src, FD)
    fptr = types.word(fields_slice(types, lay))
    spots = [lay.address, lay.address + types.hsize, fptr, fptr + 24 * len(lay.fields) - 8]
    patches = {}
    for _ in range(data.draw(st.integers(1, 4))):
        base = data.draw(st.sampled_from(spots))
        at = base + data.draw(st.integers(0, 40))
        patches[at] = data.draw(st.binary(min_size=1, max_size=8))
    bad = patched(tmp_path, src, patches, name=f"r{abs(hash(tuple(patches.items())))}")

    def boom(*_):
        raise TimeoutError("the report did not finish")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(60)
    try:
        rep = analyze_go_binary(bad)
    except DbhiveError:
        return
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert rep.offsets["crypto/tls.Conn.conn"]["offset"] == 0
    e = rep.offsets["internal/poll.FD.Sysfd"]
    assert e["source"] in ("typeinfo", table_source("1.24"))
    if e["source"] == "typeinfo" and e["offset"] != 16:
        # damage that still reads as a consistent struct must disagree with the table
        assert e["conflicts"] == {table_source("1.24"): 16}
