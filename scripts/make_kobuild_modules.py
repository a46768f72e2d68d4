#!/usr/bin/env python3
"""Build the custom kernel modules kobuild's tests read, from data/kmod-src/kotest/, with
`-g` against the installed Debian kernel build tree (linux-headers-6.1.0-47-cloud-amd64),
and make compressed copies of modules with the real xz / zstd / gzip tools.

    python -m scripts.make_kobuild_modules [OUT_DIR]    # prints name<TAB>path per module

Modules (nothing prebuilt is committed):
  dbhive_kotest       its own structs/unions/enums/typedefs: nested and anonymous members,
                      bitfields (a :0 one too), 1-D/2-D/flexible arrays, a packed struct,
                      a function pointer; kernel structs by value and by pointer; exported,
                      static and variadic functions taking them; MODULE_VERSION (srcversion)
  dbhive_kotest_peer  a `struct pid_entry` of its own (the kernel has another layout of that
                      name) pointed to by its other structs

The output directory defaults to $DBHIVE_TEST_CACHE/kobuild/kotest-<hash of the sources,
compiler and build tree>, so later runs reuse what an earlier run built.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys

from scripts.realdata import CACHE, DEBIAN_RELEASE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "data", "kmod-src", "kotest")
KERNEL_BUILD = f"/usr/src/linux-headers-{DEBIAN_RELEASE}"
MODULES = ("dbhive_kotest", "dbhive_kotest_peer")
VERSION = "1"                 # bump when the recipe changes
COMPRESSORS = {"xz": ["xz", "-k", "-f", "-T1"], "zst": ["zstd", "-q", "-f", "-k"],
               "gz": ["gzip", "-k", "-f"]}


def _run(cmd, cwd):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{p.stdout}{p.stderr}")
    return p


def default_out_dir() -> str:
    h = hashlib.sha256(VERSION.encode())
    for path in sorted(glob.glob(os.path.join(SRC, "*"))):
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as fh:
            h.update(fh.read())
    h.update(_run(["gcc", "--version"], ROOT).stdout.encode())
    h.update(os.path.realpath(KERNEL_BUILD).encode())
    return os.path.join(CACHE, "kobuild", f"kotest-{h.hexdigest()[:16]}")


def build(out_dir: str = None) -> dict:
    """Build the modules (or reuse an earlier build); {module name: .ko path}."""
    out_dir = out_dir or default_out_dir()
    made = {m: os.path.join(out_dir, f"{m}.ko") for m in MODULES}
    if all(os.path.exists(p) for p in made.values()):
        return made
    if not os.path.isdir(KERNEL_BUILD):
        raise RuntimeError(f"{KERNEL_BUILD} is missing: install linux-headers-{DEBIAN_RELEASE}")
    tmp = f"{out_dir}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(SRC, tmp)
    _run(["make", "-s", "-C", KERNEL_BUILD, f"M={tmp}", "KCFLAGS=-g", "modules"], tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    os.replace(tmp, out_dir)
    return made


def compressed(ko: str, out_dir: str, kinds=("xz", "zst", "gz")) -> dict:
    """Compressed copies of `ko` made by the real tools, in `out_dir`; {kind: path}."""
    os.makedirs(out_dir, exist_ok=True)
    plain = os.path.join(out_dir, os.path.basename(ko))
    shutil.copyfile(ko, plain)
    out = {}
    for kind in kinds:
        _run(COMPRESSORS[kind] + [plain], out_dir)
        out[kind] = f"{plain}.{kind}"
    os.unlink(plain)
    return out


if __name__ == "__main__":
    for k, v in build(sys.argv[1] if len(sys.argv) > 1 else None).items():
        print(f"{k}\t{v}")
