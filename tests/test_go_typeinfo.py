"""Struct offsets from the runtime type descriptors against the DWARF of the unstripped twin,
on real builds: every build mode of the Go matrix (DWARF, -s -w, strip, PIE, no build info),
for two toolchains in CI (Go 1.15: offsetAnon and 2-byte names; Go 1.27: no typelinks).  The
sweep over every toolchain here is `python -m bench.bench_go --sweep` (it runs these checks).  Oracle: pyelftools over the twin's DWARF (the same
reader scripts/gen_go_offsets.py uses, independent of typeinfo.py)."""
from __future__ import annotations

import functools

import pytest

from resolver.golang.offsets import STANDARD_OFFSETS, split_key
from resolver.golang.report import analyze_go_binary, open_types
from scripts.gen_go_offsets import dwarf_structs
from tests.support.go_builds import VARIANTS, binary, go_version, twin

WANTED = sorted({split_key(k)[0] for k in STANDARD_OFFSETS})
MUST = ["crypto/tls.Conn.conn", "internal/poll.FD.Sysfd"]     # reachable from net.Conn itabs
# Debian's x/net 0.7 and gRPC 1.33 sources need Go >= 1.16 (io/fs)
THIRD_PARTY_PROGRAMS = ("grpcapp", "xnetapp")


def cases(toolchains):
    out = [(t, "tlsapp", v) for t in toolchains for v in VARIANTS]
    out += [(t, p, v) for t in toolchains if t != "1.15" for p in THIRD_PARTY_PROGRAMS
            for v in ("strip", "pie")]
    return out


CI_CASES = cases(["1.15", "1.27"]) + [("1.27", "tlsapp", "arm64"), ("1.27", "tlsapp", "arm64-strip")]


@functools.lru_cache(maxsize=None)
def dwarf_truth(path):
    return dwarf_structs(path, set(WANTED))


def typeinfo_value(entry):
    """The typeinfo answer of an offsets entry, or None."""
    if entry["source"] == "typeinfo":
        return entry["offset"]
    if "typeinfo" in (entry.get("checked") or []):
        return entry["offset"]
    return (entry.get("conflicts") or {}).get("typeinfo")


def check_against_dwarf(toolchain, program, variant):
    path = binary(toolchain, program, variant)
    truth = dwarf_truth(twin(toolchain, program, variant))
    rep = analyze_go_binary(path)
    assert rep.version == go_version(toolchain)
    assert rep.typeinfo["available"], rep.typeinfo
    answered = 0
    for key in STANDARD_OFFSETS:
        entry = rep.offsets[key]
        assert not entry.get("conflicts"), (key, entry)
        got = typeinfo_value(entry)
        sname, field = split_key(key)
        if got is None:
            assert entry["typeinfo"], (key, entry)       # says why not
            continue
        answered += 1
        assert got == truth[sname][field], (key, entry)
    assert rep.typeinfo["typeinfo_answered"] == answered
    assert rep.typeinfo["from_typeinfo"] == sum(1 for e in rep.offsets.values()
                                                if e["source"] == "typeinfo")
    # crypto/tls and internal/poll always from descriptors (DWARF first where it is there)
    has_dwarf = variant in ("dwarf", "pie", "nobi", "arm64")
    for key in MUST:
        e = rep.offsets[key]
        assert e["source"] == ("dwarf" if has_dwarf else "typeinfo"), (key, e)
        assert typeinfo_value(e) is not None, (key, e)
    assert rep.offsets["runtime.g.goid"]["source"] in ("dwarf", "typeinfo")
    # whole layouts: every field of every wanted struct the descriptors have
    types, _ = open_types(path)
    found = 0
    for sname in WANTED:
        lay, why = types.find_struct(sname)
        if lay is None:
            assert why
            continue
        found += 1
        assert lay.offsets() == truth[sname], sname
    assert found >= 3
    return rep


@pytest.mark.parametrize("toolchain,program,variant", CI_CASES,
                         ids=[f"go{t}-{p}-{v}" for t, p, v in CI_CASES])
def test_typeinfo_equals_dwarf(toolchain, program, variant):
    check_against_dwarf(toolchain, program, variant)


def closure_check(toolchain, program):
    """Every named struct reachable in the descriptors (the closure walk) against the twin's
    DWARF, struct by struct: the same fields at the same offsets."""
    strip, dwarf_bin = binary(toolchain, program, "strip"), binary(toolchain, program, "dwarf")
    types, _ = open_types(strip)
    layouts = types.structs()
    truth = dwarf_structs(dwarf_bin, {lay.name for lay in layouts})
    compared = 0
    for lay in layouts:
        if lay.name in truth and "[" not in lay.name:     # generic instances: names differ
            assert lay.offsets() == truth[lay.name], lay.name
            compared += 1
    assert compared >= 0.8 * len(layouts) and compared > 300, (compared, len(layouts))
    return compared


def test_closure_equals_dwarf():
    closure_check("1.27", "tlsapp")


def test_verifier_fails_on_wrong_offsets(monkeypatch):
    """The check above is not vacuous: an encoding that halves the offsets is caught."""
    from resolver.golang import typeinfo as ti
    path = binary("1.27", "tlsapp", "strip")
    real = ti.encoding_candidates

    def wrong(*a, **k):
        return [ti.Encoding(e.varint_names, True, e.typedesc_walk, e.map_words)
                for e in real(*a, **k)]
    monkeypatch.setattr(ti, "encoding_candidates", wrong)
    rep = analyze_go_binary(path)
    # halved offsets overlap: no layout passes its own consistency check, nothing is wrong
    assert rep.typeinfo["from_typeinfo"] == 0
    assert "does not fit" in rep.offsets["crypto/tls.Conn.conn"]["typeinfo"]
    # and without the consistency check the comparison itself fails
    monkeypatch.setattr(ti.Descriptors, "_read_struct", _unchecked_read_struct)
    with pytest.raises(AssertionError):
        check_against_dwarf("1.27", "tlsapp", "strip")


def _unchecked_read_struct(self, t, name):
    from resolver.golang import typeinfo as ti
    import struct
    p = self.p
    ptr, n = self._slice(t + self.hsize + p, ti.MAX_FIELDS, 3 * p)
    fields = []
    for i in range(n):
        name_at, typ, off = struct.unpack_from(self.e + "QQQ", self.region,
                                               self._off(ptr + 3 * p * i, 3 * p))
        fields.append(ti.Field(self.name(name_at)[1], off >> 1, self.size(typ), "", False))
    return ti.Layout(name or "", self.size(t), 8, t, fields)
