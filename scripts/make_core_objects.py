"""Build the CO-RE test fixtures of data/core-src: the libbpf loader (gcc, Debian's
libbpf-dev) and the BPF programs (clang -target bpf -g -O2; core_kinds with clang-16, which
has TYPE_MATCHES) against a vmlinux.h that `bpftool btf dump file BTF format c` makes from
the BTF given -- normally dbhive's own output, so the programs are compiled against our BTF.

    python -m scripts.make_core_objects --btf vmlinux.btf --out DIR

Outputs in DIR: vmlinux.h, core_loader, core_task.bpf.o, core_sock.bpf.o, core_kinds.bpf.o.
`build()` caches by the sources, the BTF and the compilers' versions (a directory per key
under $DBHIVE_TEST_CACHE/btfout/core-<key>/), written atomically.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import tempfile

from scripts.realdata import cache_dir

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                   "core-src")
PROGRAMS = {"core_task": "clang", "core_sock": "clang", "core_kinds": "clang-16"}
SOURCES = ("core_common.h", "core_loader.c", "core_task.bpf.c", "core_sock.bpf.c",
           "core_kinds.bpf.c")


def _version(tool: str) -> str:
    return subprocess.run([tool, "--version"], capture_output=True, text=True,
                          check=True).stdout.splitlines()[0]


def cache_key(btf: str) -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        with open(os.path.join(SRC, name), "rb") as fh:
            h.update(fh.read())
    with open(btf, "rb") as fh:
        h.update(hashlib.sha256(fh.read()).digest())
    for tool in ("clang", "clang-16", "gcc", "bpftool"):
        h.update(_version(tool).encode())
    return h.hexdigest()[:16]


def make(btf: str, out: str) -> dict:
    """Build everything into `out` (made if needed); returns name -> path."""
    os.makedirs(out, exist_ok=True)
    header = os.path.join(out, "vmlinux.h")
    with open(header, "w") as fh:
        subprocess.run(["bpftool", "btf", "dump", "file", btf, "format", "c"], stdout=fh,
                       check=True)
    paths = {"vmlinux.h": header}
    loader = os.path.join(out, "core_loader")
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", loader,
                    os.path.join(SRC, "core_loader.c"), "-lbpf"], check=True)
    paths["core_loader"] = loader
    for name, cc in PROGRAMS.items():
        obj = os.path.join(out, f"{name}.bpf.o")
        subprocess.run([cc, "-target", "bpf", "-D__TARGET_ARCH_x86", "-g", "-O2", "-Wall",
                        "-I", out, "-I", SRC, "-c", os.path.join(SRC, f"{name}.bpf.c"),
                        "-o", obj], check=True)
        paths[name] = obj
    return paths


def build(btf: str) -> dict:
    """The fixtures built against `btf`, from the cache when already built."""
    root = cache_dir("btfout")
    final = os.path.join(root, f"core-{cache_key(btf)}")
    names = ["vmlinux.h", "core_loader"] + [f"{n}.bpf.o" for n in PROGRAMS]
    if not all(os.path.exists(os.path.join(final, n)) for n in names):
        tmp = tempfile.mkdtemp(prefix=".core-", dir=root)
        try:
            make(btf, tmp)
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    out = {"vmlinux.h": os.path.join(final, "vmlinux.h"),
           "core_loader": os.path.join(final, "core_loader")}
    out.update({n: os.path.join(final, f"{n}.bpf.o") for n in PROGRAMS})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--btf", required=True, help="BTF to make vmlinux.h from")
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args()
    for name, path in make(args.btf, args.out).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
