"""Real Go test binaries, built once per toolchain and source and cached on disk.

$DBHIVE_TEST_CACHE/go-bins/<go version>/<program>-<source hash>/<variant>, variants:
  dwarf       plain `go build` (symbols + DWARF): the unstripped twin, ground truth
  sw          -ldflags='-s -w'
  strip       `strip` of dwarf
  pie         -buildmode=pie (with DWARF)
  nobi        dwarf with .go.buildinfo removed (objcopy)
  nobi-strip  strip of nobi: no build info, no symbols, no DWARF
  arm64 / arm64-strip   GOARCH=arm64 cross builds (plain, and -ldflags='-s -w')
"""
from __future__ import annotations

import hashlib
import os
import subprocess

from scripts import go_toolchains as tc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SRC = os.path.join(ROOT, "data", "go-src")
GOPATH_PROGRAMS = {"grpcapp", "xnetapp", "offsetprobe"}
VARIANTS = ["dwarf", "sw", "strip", "pie", "nobi", "nobi-strip"]


def _src_hash(program: str) -> str:
    h = hashlib.sha256()
    d = os.path.join(SRC, program)
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as fh:
            h.update(name.encode() + b"\0" + fh.read())
    return h.hexdigest()[:12]


_versions = {}


def go_version(minor: str) -> str:
    if minor not in _versions:
        _versions[minor] = tc.toolchain_version(minor)
    return _versions[minor]


def binary(minor: str, program: str, variant: str) -> str:
    """Path of a cached test binary, building it (and what it derives from) if needed."""
    d = os.path.join(tc.CACHE, "go-bins", go_version(minor), f"{program}-{_src_hash(program)}")
    out = os.path.join(d, variant)
    if os.path.exists(out):
        return out
    src = os.path.join(SRC, program)
    gopath = program in GOPATH_PROGRAMS
    if variant == "dwarf":
        tc.build(minor, src, out, gopath)
    elif variant == "sw":
        tc.build(minor, src, out, gopath, ldflags="-s -w")
    elif variant == "pie":
        tc.build(minor, src, out, gopath, buildmode="pie")
    elif variant == "arm64":
        tc.build(minor, src, out, gopath, goarch="arm64")
    elif variant == "arm64-strip":     # binutils here cannot strip arm64: let the linker do it
        tc.build(minor, src, out, gopath, ldflags="-s -w", goarch="arm64")
    elif variant in ("strip", "nobi", "nobi-strip"):
        base = {"strip": "dwarf", "nobi": "dwarf", "nobi-strip": "nobi"}[variant]
        src_bin = binary(minor, program, base)
        if variant == "nobi":
            cmd = ["objcopy", "--remove-section", ".go.buildinfo", src_bin, out + ".part"]
        else:
            cmd = ["strip", "-o", out + ".part", src_bin]
        subprocess.run(cmd, check=True, capture_output=True)
        os.replace(out + ".part", out)
    else:
        raise ValueError(variant)
    return out


def twin(minor: str, program: str, variant: str) -> str:
    """The unstripped binary whose toolchain view is the truth for `variant`."""
    if variant.startswith("arm64"):
        return binary(minor, program, "arm64")
    if variant == "pie":
        return binary(minor, program, "pie")
    return binary(minor, program, "dwarf")


def go_tool(minor: str, *args: str) -> str:
    res = subprocess.run([tc.go_binary(minor), *args], capture_output=True, text=True,
                         env=tc.go_env(True))
    if res.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout
