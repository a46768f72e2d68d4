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
import re
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


def our_full_btf(db: str, path: str) -> str:
    """Our full BTF of the kernel of DB (emitted from the DB), written to PATH."""
    from dbhive import schema
    from dbhive.btf import make
    k = make.Kernel(schema.read_meta(db), db=db)
    with open(path, "wb") as fh:
        fh.write(make.full_btf(k).emitted.data)
    return path


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


# ---- what a CO-RE program's run must give whatever BTF it was relocated against ------------
# (data/core-src's programs; tests/test_btf_core.py on this kernel, tests/test_vm.py in the
# booted guests)

PROGRAMS = ("core_task", "core_sock", "core_kinds")
TRIGGER = {"core_task": "getppid", "core_sock": "tcp", "core_kinds": "getppid"}
# value index -> the truth key it must equal (the rest must only agree between runs)
TRUTH = {"core_task": {0: "pid", 1: "tgid", 2: "ppid", 3: "uid", 4: "mnt_ns", 12: "fsbase"},
         "core_sock": {1: "client_port", 2: "server_port", 10: "client_port",
                       11: "server_port"},
         "core_kinds": {}}
TARGET_ID = {"core_kinds": 8}        # v[8] = bpf_core_type_id_kernel(struct task_struct)
_PATCH = re.compile(r"relo #(\d+): (?:patched insn #(\d+) \((\S+)\) (?:\S+ )?(\S+) -> (\S+)|"
                    r"substituting insn #(\d+))")


def task_struct_id(btf: str) -> int:
    from tests.support.bpftool_oracle import bpftool_dump
    return next(r.id for r in bpftool_dump(btf) if r.kind == "STRUCT" and r.name == "task_struct")


def relocations(result: dict) -> dict:
    """relo index -> (insn, new value) or ('poison', insn), from libbpf's log."""
    out = {}
    for line in relocation_lines(result):
        m = _PATCH.match(line)
        assert m, line
        idx = int(m.group(1))
        if m.group(6) is not None:
            out[idx] = ("poison", int(m.group(6)))
        else:
            out.setdefault(idx, (int(m.group(2)), int(m.group(5))))
    return out


_TARGET_RELOS: dict = {}


def comparable(name: str, result: dict, btf: str, obj: str = None) -> dict:
    """What must be equal whatever BTF the program was relocated against: instructions
    and relocations with the target type id (an id in `btf`: checked, then masked), the
    values that do not depend on the run."""
    assert result["loaded"], result.get("log", "")[-2000:]
    relos = relocations(result)
    insns = list(result["programs"][name])
    tid = task_struct_id(btf) if name in TARGET_ID else None
    if name in TARGET_ID:
        if name not in _TARGET_RELOS:        # which relocations are type_id_target ones
            from dbhive.btf import ext as E
            _TARGET_RELOS[name] = [i for i, r in enumerate(E.read_object(obj).relos)
                                   if r.kind_name == "type_id_target"]
        for idx in _TARGET_RELOS[name]:
            insn, value = relos[idx]
            assert value == tid, (name, idx, value, tid)
            relos[idx] = (insn, "task_struct id")
            insns[insn] = insns[insn][:8] + "target-id"
    values = list(result.get("values", []))
    if name in TARGET_ID and values:
        assert values[TARGET_ID[name]] == tid
        values[TARGET_ID[name]] = "task_struct id"
    for i, key in (TRUTH[name] if values else {}).items():
        assert values[i] == result["truth"][key], (name, i, key, values[i], result["truth"])
        values[i] = key
    return {"relocations": relos, "insns": insns, "values": values,
            "hits": result.get("hits")}
