#!/usr/bin/env python3
"""Build the DWARF fixtures the tests compare with pahole, from the C sources in
data/dwarf-src/ (nothing prebuilt is committed).

    scripts/make_dwarf_fixtures.py [OUT_DIR]      # prints name<TAB>path per fixture

Fixtures (userspace ones from data/dwarf-src/user: uapi kernel headers + kernel-like shapes;
kmod-* from data/dwarf-src/kmod with the installed kernel build tree):
  user-dwarf2          gcc -gdwarf-2 -gstrict-dwarf (member offsets as DW_OP_plus_uconst
                       expressions, DWARF 2 ref_addr size)
  user-dwarf4          gcc -gdwarf-4 (DW_AT_bit_offset bitfields, DWARF 4 forms)
  user-dwarf5          gcc -gdwarf-5 (DW_AT_data_bit_offset, implicit_const, line_strp)
  user-dwarf4-types    -gdwarf-4 -fdebug-types-section (.debug_types, DW_FORM_ref_sig8)
  user-dwarf5-types    -gdwarf-5 -fdebug-types-section (DW_UT_type units in .debug_info)
  user-dwz4, user-dwz5 dwz -m over two executables: partial/imported units, an alt file
                       (.gnu_debugaltlink, DW_FORM_GNU_ref_alt / GNU_strp_alt); *.before-dwz
                       is the executable as linked (pahole 1.24 does not read alt files)
  user-gz              -gz=zlib (SHF_COMPRESSED debug sections)
  user-clang5          clang -gdwarf-5 (strx1/strx2 + str_offsets_base, addrx, MD5 line
                       tables); built when clang is installed
  user-split-a.dwo     -gsplit-dwarf -gdwarf-5 (.debug_info.dwo, strx forms); user-a.o is
                       the same unit built without -gsplit-dwarf
  kmod-dwarf4, kmod-dwarf5   a kbuild-built .ko (ET_REL: relocations must be applied)

The output directory defaults to $DBHIVE_TEST_CACHE/dwarf-fixtures/<hash of the sources and
compiler>, so a run reuses what an earlier run built.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "data", "dwarf-src")
KERNEL_BUILD = "/usr/src/linux-headers-6.1.0-47-cloud-amd64"
VERSION = "4"          # bump when the recipes change

USER_SOURCES = ("types_a.c", "types_b.c")


def _run(cmd, cwd, env=None):
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{p.stdout}{p.stderr}")
    return p


def default_out_dir() -> str:
    h = hashlib.sha256(VERSION.encode())
    for path in sorted(glob.glob(os.path.join(SRC, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            h.update(os.path.relpath(path, SRC).encode())
            with open(path, "rb") as fh:
                h.update(fh.read())
    h.update(_run(["gcc", "--version"], ROOT).stdout.encode())
    cache = os.environ.get("DBHIVE_TEST_CACHE", "/var/cache/dbhive-ci")
    return os.path.join(cache, "dwarf-fixtures", h.hexdigest()[:16])


def _gcc(out, flags, work, cc="gcc"):
    srcs = [os.path.join(SRC, "user", s) for s in USER_SOURCES]
    _run([cc, "-O1", "-fno-eliminate-unused-debug-types", *flags, "-o", out, *srcs], work)


def build_user(out_dir: str) -> dict:
    made = {}
    for name, flags in (("user-dwarf2", ["-gdwarf-2", "-gstrict-dwarf"]),
                        ("user-dwarf4", ["-gdwarf-4"]),
                        ("user-dwarf5", ["-gdwarf-5"]),
                        ("user-dwarf4-types", ["-gdwarf-4", "-fdebug-types-section"]),
                        ("user-dwarf5-types", ["-gdwarf-5", "-fdebug-types-section"]),
                        ("user-gz", ["-gdwarf-5", "-gz=zlib"])):
        out = os.path.join(out_dir, name)
        _gcc(out, flags, out_dir)
        made[name] = out
    for ver in ("4", "5"):
        # two executables sharing their types -> dwz moves them to a common alt file
        a = os.path.join(out_dir, f"user-dwz{ver}")
        b = os.path.join(out_dir, f"user-dwz{ver}-twin")
        _gcc(a, [f"-gdwarf-{ver}"], out_dir)
        _gcc(b, [f"-gdwarf-{ver}", "-O0"], out_dir)
        shutil.copy(a, a + ".before-dwz")      # the oracle's input: pahole 1.24 ignores alt files
        alt = f"user-dwz{ver}.alt"
        _run(["dwz", "-m", alt, "-M", alt, os.path.basename(a), os.path.basename(b)], out_dir)
        made[f"user-dwz{ver}"] = a
        made[f"user-dwz{ver}.before-dwz"] = a + ".before-dwz"
    if shutil.which("clang"):
        # clang's DWARF 5: strx1/strx2 names through DW_AT_str_offsets_base, addrx, MD5
        # (data16) in the line table
        out = os.path.join(out_dir, "user-clang5")
        _gcc(out, ["-gdwarf-5"], out_dir, cc="clang")
        made["user-clang5"] = out
    split = os.path.join(out_dir, "split")
    os.makedirs(split, exist_ok=True)
    _run(["gcc", "-O1", "-gdwarf-5", "-gsplit-dwarf", "-fno-eliminate-unused-debug-types",
          "-c", os.path.join(SRC, "user", "types_a.c"), "-o", "user-split-a.o"], split)
    made["user-split-a.dwo"] = os.path.join(split, "user-split-a.dwo")
    # the same unit without -gsplit-dwarf, for the oracle
    _run(["gcc", "-O1", "-gdwarf-5", "-fno-eliminate-unused-debug-types", "-c",
          os.path.join(SRC, "user", "types_a.c"), "-o", "user-a.o"], split)
    made["user-a.o"] = os.path.join(split, "user-a.o")
    return made


def build_kmod(out_dir: str) -> dict:
    made = {}
    if not os.path.isdir(KERNEL_BUILD):
        return made
    for ver in ("4", "5"):
        work = os.path.join(out_dir, f"kmod{ver}")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(os.path.join(SRC, "kmod"), work)
        _run(["make", "-s", "-C", KERNEL_BUILD, f"M={work}", f"KCFLAGS=-gdwarf-{ver}",
              "modules"], work)
        made[f"kmod-dwarf{ver}"] = os.path.join(work, "dbhive_fixture.ko")
    return made


def build(out_dir: str = None) -> dict:
    """Build every fixture (or reuse a complete earlier build); name -> path."""
    out_dir = out_dir or default_out_dir()
    index = os.path.join(out_dir, "fixtures.tsv")
    if os.path.exists(index):
        with open(index) as fh:
            made = dict(line.rstrip("\n").split("\t") for line in fh if line.strip())
        if all(os.path.exists(p) for p in made.values()):
            return made
    tmp = out_dir + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    made = build_user(tmp)
    made.update(build_kmod(tmp))
    made = {k: os.path.join(out_dir, os.path.relpath(v, tmp)) for k, v in made.items()}
    with open(os.path.join(tmp, "fixtures.tsv"), "w") as fh:
        for k, v in made.items():
            fh.write(f"{k}\t{v}\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    os.replace(tmp, out_dir)
    return made


if __name__ == "__main__":
    for k, v in build(sys.argv[1] if len(sys.argv) > 1 else None).items():
        print(f"{k}\t{v}")
