#!/usr/bin/env python3
"""Build the custom kernel modules kobuild's tests read, from data/kmod-src/kotest/, with
`-g` against the installed Debian kernel build tree (linux-headers-6.1.0-47-cloud-amd64),
and make compressed copies of modules with the real xz / zstd / gzip tools.  For aarch64
the same modules are cross-built, as Debian supports it, against the arm64 build tree
(linux-headers-6.1.0-47-arm64, fetched with apt, over the installed -common tree and
linux-kbuild host tools) with Debian's aarch64-linux-gnu-gcc-12.

    python -m scripts.make_kobuild_modules [OUT_DIR] [--arch aarch64]
                                          # prints name<TAB>path per module

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

from scripts.realdata import CACHE, DEBIAN_RELEASE, cache_dir, fetch_deb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "data", "kmod-src", "kotest")
KERNEL_BUILD = f"/usr/src/linux-headers-{DEBIAN_RELEASE}"
ABI = DEBIAN_RELEASE.rsplit("-", 2)[0]                  # 6.1.0-47
# arch -> (Debian arch, GNU triplet, the kernel flavour built for it)
CROSS = {"aarch64": ("arm64", "aarch64-linux-gnu", f"{ABI}-arm64")}
MODULES = ("dbhive_kotest", "dbhive_kotest_peer")
VERSION = "1"                 # bump when the recipe changes
COMPRESSORS = {"xz": ["xz", "-k", "-f", "-T1"], "zst": ["zstd", "-q", "-f", "-k"],
               "gz": ["gzip", "-k", "-f"]}


def _run(cmd, cwd):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{p.stdout}{p.stderr}")
    return p


def _compiler(arch: str) -> str:
    return "gcc" if arch == "x86_64" else f"{CROSS[arch][1]}-gcc-12"


def default_out_dir(arch: str = "x86_64") -> str:
    h = hashlib.sha256(VERSION.encode())
    for path in sorted(glob.glob(os.path.join(SRC, "*"))):
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as fh:
            h.update(fh.read())
    h.update(_run([_compiler(arch), "--version"], ROOT).stdout.encode())
    if arch == "x86_64":
        h.update(os.path.realpath(KERNEL_BUILD).encode())
        return os.path.join(CACHE, "kobuild", f"kotest-{h.hexdigest()[:16]}")
    h.update(CROSS[arch][2].encode())
    return os.path.join(CACHE, "kobuild", f"kotest-{arch}-{h.hexdigest()[:16]}")


def cross_build_tree(arch: str) -> str:
    """The Debian build tree of the kernel flavour for `arch` (its headers package unpacked
    into the cache once), over this machine's linux-headers-<abi>-common and linux-kbuild
    (host tools): what `make M=...` needs to cross-build a module."""
    deb_arch, _, flavour = CROSS[arch]
    common = f"/usr/src/linux-headers-{ABI}-common"
    kbuild = os.path.realpath(os.path.join(KERNEL_BUILD, "scripts", ".."))
    for need in (common, kbuild):
        if not os.path.isdir(need):
            raise RuntimeError(f"{need} is missing: install linux-headers-{DEBIAN_RELEASE}")
    root = os.path.join(CACHE, "kobuild", f"headers-{flavour}")
    tree = os.path.join(root, "usr", "src", f"linux-headers-{flavour}")
    if not os.path.isdir(tree):
        deb = fetch_deb(f"linux-headers-{flavour}", deb_arch)
        tmp = f"{root}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _run(["dpkg-deb", "-x", deb, tmp], ROOT)
        # the package's relative links (../linux-headers-<abi>-common, ../../lib/linux-kbuild-*)
        # reach this machine's trees
        os.symlink(common, os.path.join(tmp, "usr", "src", os.path.basename(common)))
        os.makedirs(os.path.join(tmp, "usr", "lib"), exist_ok=True)
        os.symlink(kbuild, os.path.join(tmp, "usr", "lib", os.path.basename(kbuild)))
        cache_dir("kobuild")
        os.replace(tmp, root)
    return tree


def build(out_dir: str = None, arch: str = "x86_64") -> dict:
    """Build the modules for `arch` (x86_64, or aarch64: cross-built), or reuse an earlier
    build; {module name: .ko path}."""
    if arch != "x86_64" and arch not in CROSS:
        raise ValueError(f"no cross build for {arch} (x86_64, {', '.join(CROSS)})")
    out_dir = out_dir or default_out_dir(arch)
    made = {m: os.path.join(out_dir, f"{m}.ko") for m in MODULES}
    if all(os.path.exists(p) for p in made.values()):
        return made
    cross: list = []
    if arch == "x86_64":
        tree = KERNEL_BUILD
        if not os.path.isdir(tree):
            raise RuntimeError(f"{tree} is missing: install linux-headers-{DEBIAN_RELEASE}")
    else:
        tree = cross_build_tree(arch)
        deb_arch, triplet, _ = CROSS[arch]
        # what the tree's Makefile picks the cross compiler by (CROSS_COMPILE=<triplet>-)
        cross = ["DEB_BUILD_ARCH=amd64", f"DEB_HOST_ARCH={deb_arch}",
                 f"DEB_HOST_GNU_TYPE={triplet}"]
    tmp = f"{out_dir}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(SRC, tmp)
    _run(["make", "-s", "-C", tree, f"M={tmp}", "KCFLAGS=-g", *cross, "modules"], tmp)
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
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--arch", default="x86_64", choices=["x86_64", *CROSS])
    args = ap.parse_args()
    for k, v in build(args.out_dir, args.arch).items():
        print(f"{k}\t{v}")
