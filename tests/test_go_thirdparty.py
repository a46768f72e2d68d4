"""Released Go programs no one here built, as shipped in PyPI and npm packages (shfmt, esbuild
from Go 1.16 to 1.26 — one without build info —, buf with Go 1.27): the standard-library
offsets read from their type descriptors equal the generated table's for the same Go minor
wherever the table has one, and crypto/tls / internal/poll / runtime.g come from descriptors.
Third-party library structs (gRPC, x/net) depend on the library's version, not Go's: no
build of those versions exists here, so they are not compared.  CI runs three;
`python -m bench.bench_go --sweep` all of them."""
from __future__ import annotations

import pytest

from resolver.golang.offsets import STANDARD_OFFSETS, _from_table, load_table, module_of, split_key
from resolver.golang.report import analyze_go_binary, open_types
from tests.support.go_builds import THIRD_PARTY_CI, third_party

# What each package's binary is (checked, so a changed package is noticed).
EXPECTED = {"shfmt-4.2.0": ("go1.27.1", False), "esbuild-0.8.57": ("go1.16", True),
            "esbuild-0.13.15": ("go1.17.2", True), "esbuild-0.14.54": ("go1.19", True),
            "esbuild-0.17.19": ("go1.20.4", True), "esbuild-0.28.2": ("go1.26.5", True),
            "buf-1.75.0": ("go1.27.3", True)}


def check(name):
    path = third_party(name)
    version, links_tls = EXPECTED[name]
    rep = analyze_go_binary(path)
    assert rep.version == version
    assert rep.typeinfo["available"], rep.typeinfo
    table = load_table()
    compared = from_types = 0
    for key in STANDARD_OFFSETS:
        e = rep.offsets[key]
        assert not e.get("conflicts"), (key, e)
        sname, _ = split_key(key)
        if e["source"] != "typeinfo" or module_of(sname) is not None:
            continue
        from_types += 1
        t = _from_table(table, key, None, version, {})
        if t["offset"] is not None:
            assert e["offset"] == t["offset"], (key, e, t)
            assert t["source"] in e["checked"]
            compared += 1
    assert rep.offsets["runtime.g.goid"]["source"] == "typeinfo"
    assert rep.offsets["internal/poll.FD.Sysfd"]["source"] == "typeinfo"
    if links_tls:
        assert rep.offsets["crypto/tls.Conn.conn"]["source"] == "typeinfo"
    minor = version.split(".")[1]
    if any(v.split(".")[1] == minor for v in table["std"]):
        assert compared == from_types >= 2
    # the layouts listed by --types are readable too
    types, _ = open_types(path)
    assert len(types.structs("internal/poll.*")) >= 1
    return rep


@pytest.mark.parametrize("name", THIRD_PARTY_CI)
def test_third_party_std_offsets_match_table(name):
    check(name)


def probe_check(name):
    """Go 1.16/1.17 share a pclntab magic but not the name encoding, 1.18/1.19 not the field
    offset encoding: without a version the encoding is told from the descriptors, and it is
    the one the version says."""
    from dbhive.elf import ElfFile
    from resolver.golang.moduledata import find_moduledata
    from resolver.golang.pclntab import find_pclntab
    from resolver.golang.typeinfo import open_descriptors
    img = ElfFile(third_party(name))
    tab = find_pclntab(img)
    md = find_moduledata(img, tab)
    known = open_descriptors(img, tab, md, EXPECTED[name][0])
    probed = open_descriptors(img, tab, md, None)
    assert probed.enc == known.enc
    lay = probed.find_struct("internal/poll.FD")[0]
    assert lay.offsets() == known.find_struct("internal/poll.FD")[0].offsets()


def test_version_probe_without_build_info():
    probe_check("esbuild-0.14.54")          # Go 1.19 (the sweep adds 1.16 and 1.17)
