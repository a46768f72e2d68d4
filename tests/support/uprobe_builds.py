"""The C test program of the uprobe expressions (data/uprobe-src/uprobeprog.c), built here
with gcc -g and cached by source hash:

$DBHIVE_TEST_CACHE/uprobe-c/<source hash>/<variant>, variants:
  pie        gcc -g -O1 (Debian's default: PIE)
  nopie      gcc -g -O1 -no-pie (ET_EXEC)
  stripped   `strip --strip-debug` of pie, with its DWARF moved to a debug file named by its
             build-id under debug/.build-id/ab/cdef….debug (objcopy --only-keep-debug)
"""
from __future__ import annotations

import hashlib
import os
import subprocess

from scripts.realdata import cache_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "data", "uprobe-src", "uprobeprog.c")
FLAGS = {"pie": ["-g", "-O1"], "nopie": ["-g", "-O1", "-no-pie"]}


def _dir() -> str:
    with open(SRC, "rb") as fh:
        h = hashlib.sha256(fh.read()).hexdigest()[:12]
    return cache_dir("uprobe-c", h)


def build_id(path: str) -> str:
    out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        if "Build ID:" in line:
            return line.split("Build ID:")[1].strip()
    raise RuntimeError(f"{path} has no build-id")


def program(variant: str) -> str:
    d = _dir()
    out = os.path.join(d, variant)
    if os.path.exists(out):
        return out
    part = f"{out}.part{os.getpid()}"
    if variant in FLAGS:
        subprocess.run(["gcc", *FLAGS[variant], "-o", part, SRC], check=True)
    elif variant == "stripped":
        src = program("pie")
        bid = build_id(src)
        dbg = os.path.join(d, "debug", ".build-id", bid[:2], bid[2:] + ".debug")
        os.makedirs(os.path.dirname(dbg), exist_ok=True)
        subprocess.run(["objcopy", "--only-keep-debug", src, dbg + ".part"], check=True)
        os.replace(dbg + ".part", dbg)
        subprocess.run(["strip", "--strip-debug", "-o", part, src], check=True)
    else:
        raise ValueError(variant)
    os.replace(part, out)
    return out


def debug_dir() -> str:
    """The debug directory holding the stripped variant's debug file."""
    program("stripped")
    return os.path.join(_dir(), "debug")
