"""A wheel built from the checkout, installed into a fresh venv outside it, works: the
package data (the Go offset table) is inside the package, and the console scripts run with
no access to the source tree."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from scripts.gen_go_offsets import dwarf_structs
from tests.support.go_builds import binary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), ROOT], check=True, capture_output=True)
    (whl,) = glob.glob(str(out / "dbhive-*.whl"))
    venv = out / "venv"
    # bcc comes from Debian (python3-bpfcc): the tracer's venv sees the system packages
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", whl], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    return venv


def test_wheel_carries_its_data_and_runs_outside_the_checkout(wheel_venv, tmp_path):
    bin_ = wheel_venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(bin_ / "python"), "-c",
                            "import dbhive, resolver; print(dbhive.__file__, resolver.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env=env, check=True)
    assert ROOT not in where.stdout and str(wheel_venv) in where.stdout
    db = tmp_path / "k.db"
    p = subprocess.run([str(bin_ / "dbhive"), "build", "/sys/kernel/btf/vmlinux", "--out",
                        str(db), "--json"], cwd=tmp_path, capture_output=True, text=True,
                       env=env)
    assert p.returncode == 0, p.stderr
    assert int(json.loads(p.stdout)["meta"]["structs"]) > 5000
    p = subprocess.run([str(bin_ / "resolver"), "--db", str(db), "offset", "task_struct.files",
                        "--json"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert p.returncode == 0 and '"offset"' in p.stdout, p.stderr
    # a stripped Go binary: its offsets come from its type descriptors, checked against the
    # table shipped as package data
    exe = binary("1.24", "tlsapp", "strip")
    p = subprocess.run([str(bin_ / "resolver"), "go", exe, "--json"], cwd=tmp_path,
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    goid = json.loads(p.stdout)["offsets"]["runtime.g.goid"]
    # oracle: the unstripped twin's DWARF, read with pyelftools
    want = dwarf_structs(binary("1.24", "tlsapp", "dwarf"), {"runtime.g"})["runtime.g"]["goid"]
    assert goid["source"] == "typeinfo" and goid["offset"] == want, goid
    assert any(s.startswith("table:") for s in goid.get("checked", [])), goid
    # the tracer from the wheel: its BPF sources are package data too
    p = subprocess.run([str(bin_ / "tracer"), "offsets", "--db", str(db), "--json"],
                       cwd=tmp_path, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    fields = json.loads(p.stdout)
    assert "task_struct.files" in json.dumps(fields), p.stdout[:500]
    p = subprocess.run([str(bin_ / "python"), "-c", "import tracer.bpf, importlib.resources as r;"
                        "print(sorted(x.name for x in r.files('tracer.bpf').iterdir()))"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, check=True)
    assert ".c" in p.stdout or ".h" in p.stdout, p.stdout
