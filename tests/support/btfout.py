"""Real inputs and oracles of the BTF-output tests (tests/test_btf_*.py, bench_btf_out):

  * the Debian 6.1 vmlinux with its .BTF removed (objcopy), so a build can only read DWARF;
  * its DWARF-built hive (`dbhive build --with-btf`: DB + emitted BTF), cached by the code
    that makes it;
  * `pahole --btf_encode_detached` of the same vmlinux (the anchor);
  * the CO-RE programs and libbpf loader of data/core-src, built against a vmlinux.h made
    from our BTF (scripts/make_core_objects.py), and a runner for the loader.

Cached under $DBHIVE_TEST_CACHE/btfout/, written atomically (temp + rename).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

from scripts.realdata import DEBIAN_RELEASE, cache_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _stamp(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def _code_hash(*patterns: str) -> str:
    h = hashlib.sha256()
    for pat in patterns:
        for p in sorted(glob.glob(os.path.join(ROOT, pat))):
            with open(p, "rb") as fh:
                h.update(p.encode() + hashlib.sha256(fh.read()).digest())
    return h.hexdigest()[:16]


def vmlinux_without_btf(vmlinux: str) -> str:
    """The vmlinux with its `.BTF` section hidden (renamed `.dbhive_hidden_btf`: objcopy
    cannot remove it, symbols point into it): only DWARF is left for a build to read."""
    out = os.path.join(cache_dir("btfout"), f"vmlinux-{DEBIAN_RELEASE}.nobtf")
    if not os.path.exists(out):
        tmp = f"{out}.part-{os.getpid()}"
        try:
            subprocess.run(["objcopy", "--rename-section=.BTF=.dbhive_hidden_btf", vmlinux,
                            tmp], check=True, capture_output=True)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


def dwarf_hive(vmlinux_nobtf: str) -> str:
    """A hive built from the BTF-less vmlinux by `dbhive build --with-btf` (DWARF DB and the
    BTF emitted from it), cached by the input and the code that builds it."""
    key = hashlib.sha256((_stamp(vmlinux_nobtf) + _code_hash(
        "dbhive/*.py", "dbhive/dwarf/*.py", "dbhive/btf/*.py", "dbhive/archive/*.py")
    ).encode()).hexdigest()[:16]
    final = os.path.join(cache_dir("btfout"), f"hive-dwarf-{key}")
    if not os.path.isdir(final):
        from dbhive.build import build
        tmp = tempfile.mkdtemp(prefix=".hive-", dir=cache_dir("btfout"))
        try:
            build(vmlinux_nobtf, hive=tmp, distro="debian", with_btf=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def hive_files(hive: str) -> tuple:
    """(the DB, the BTF file) of the one kernel in a hive."""
    dbs = glob.glob(os.path.join(hive, "*", "db", "*", "*.db"))
    btfs = glob.glob(os.path.join(hive, "*", "btf", "*.btf"))
    assert len(dbs) == 1 and len(btfs) == 1, (dbs, btfs)
    return dbs[0], btfs[0]


def pahole_version() -> str:
    return subprocess.run(["pahole", "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def pahole_detached(vmlinux: str) -> str:
    """`pahole --btf_encode_detached` of `vmlinux` (pahole reads its DWARF)."""
    key = hashlib.sha256((_stamp(vmlinux) + pahole_version()).encode()).hexdigest()[:16]
    out = os.path.join(cache_dir("btfout"), f"pahole-{key}.btf")
    if not os.path.exists(out):
        tmp = f"{out}.part-{os.getpid()}"
        subprocess.run(["pahole", f"--btf_encode_detached={tmp}", vmlinux], check=True,
                       capture_output=True)
        os.replace(tmp, out)
    return out


def core_fixtures(btf: str) -> dict:
    """loader + BPF objects compiled against a vmlinux.h made from `btf`."""
    from scripts.make_core_objects import build
    return build(btf)


def run_loader(loader: str, obj: str, btf: str = None, trigger: str = "getppid",
               attach: bool = True) -> dict:
    """Load `obj` with libbpf (btf_custom_path = `btf` when given); the loader's JSON."""
    cmd = [loader, "run", obj, "--trigger", trigger]
    if btf:
        cmd += ["--btf", btf]
    if not attach:
        cmd.append("--no-attach")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if not p.stdout.strip():
        raise AssertionError(f"{' '.join(cmd)}: no output (rc {p.returncode}): {p.stderr}")
    return json.loads(p.stdout)


def btf_load(loader: str, btf: str) -> dict:
    """BPF_BTF_LOAD of a BTF file into the running kernel (the loader's JSON)."""
    p = subprocess.run([loader, "btf-load", btf], capture_output=True, text=True, timeout=120)
    return json.loads(p.stdout)


def relocation_lines(result: dict) -> list:
    """libbpf's 'relo #N: patched insn #I (...) ... -> V' lines, without the prefix."""
    out = []
    for line in result.get("relocations", "").splitlines():
        i = line.find("relo #")
        if i >= 0:
            out.append(line[i:])
    return out
