"""The `resolver` command line, DB selection, matrix, dump and overlays, on real DBs."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from scripts.realdata import DEBIAN_RELEASE
from dbhive import model as M
from dbhive import store
from resolver import NoKernelDB, Resolver
from resolver import choose as select
from tests.support.resolver_dbs import running_meta

RESOLVER = [sys.executable, "-m", "resolver.cli"]


def run(args, cwd=None, env=None):
    e = {k: v for k, v in os.environ.items() if k not in ("LBC_PREVDB", "DBHIVE_HOME")}
    e.update(env or {})
    return subprocess.run(RESOLVER + list(args), capture_output=True, text=True, cwd=cwd,
                          env=e, timeout=120)


def _place(hive, src, meta, name=None):
    d = os.path.join(hive, meta["arch"], "db", meta["distro"])
    os.makedirs(d, exist_ok=True)
    dest = os.path.join(d, name or f"info-{meta['release']}.db")
    shutil.copyfile(src, dest)
    conn = sqlite3.connect(dest)
    with conn:
        for k, v in meta.items():
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))
    conn.close()
    return dest


@pytest.fixture(scope="module")
def hive(tmp_path_factory, running_db, debian_db):
    h = str(tmp_path_factory.mktemp("hive"))
    os.makedirs(os.path.join(h, "x86_64", "db", "local"))
    os.link(running_db, os.path.join(h, "x86_64", "db", "local",
                                     f"info-{running_meta()['release']}.db"))
    os.makedirs(os.path.join(h, "x86_64", "db", "debian"))
    os.link(debian_db, os.path.join(h, "x86_64", "db", "debian", f"info-{DEBIAN_RELEASE}.db"))
    return h


def test_running_identity_agrees_with_dbhive_identity():
    from dbhive.identity import running_kernel_identity
    theirs = running_kernel_identity()
    ours = select.running_identity()
    assert (ours.release, ours.arch, ours.build_id or "") == (
        theirs.release, theirs.arch, theirs.build_id or "")
    assert ours.build_id and len(ours.build_id) == 40


def test_offset_text_json_and_exit_codes(hive):
    p = run(["offset", "--hive", hive, "task_struct.files", "sock.__sk_common.skc_ipv6only",
             "task_struct->files->fdt"])
    assert p.returncode == 0, p.stderr
    assert "task_struct.files" in p.stdout and "bit" in p.stdout and "hops" in p.stdout
    p = run(["--hive", hive, "offset", "--json", "task_struct.files", "task_struct.nope",
             "file.f_path.dentry"])
    assert p.returncode == 5                      # absent member
    out = json.loads(p.stdout)
    assert set(out) == {"kernel", "offsets"}
    assert set(out["kernel"]) == {"release", "arch", "build_id", "db"}
    assert out["kernel"]["build_id"] == select.running_identity().build_id
    o = out["offsets"]["task_struct.files"]
    assert set(o) == {"offset", "size", "type", "bit_offset", "bit_size"}
    assert o["bit_offset"] is None and o["bit_size"] is None and o["size"] == 8
    assert "absent in this kernel" in out["offsets"]["task_struct.nope"]["error"]
    p = run(["offset", "--hive", hive, "--release", DEBIAN_RELEASE, "--json",
             "sock.__sk_common.skc_ipv6only"])
    bf = json.loads(p.stdout)["offsets"]["sock.__sk_common.skc_ipv6only"]
    assert bf["bit_size"] == 1 and bf["bit_offset"] is not None


@pytest.mark.parametrize("args,code,needle", [
    (["offset", "task_struct.files"], 3, "no DB for the running kernel"),
    (["offset", "--db", "/nonexistent.db", "a.b"], 3, "no such DB file"),
    (["offset", "--release", "9.9.9-nope", "a.b"], 3, "the hive has: "),
    (["offset", "no_such_type_xyz.a"], 4, "no such struct"),
    (["offset", "task_struct..x"], 2, "bad member path"),
    (["func", "no_such_function_xyz"], 4, "no such function"),
    (["struct", "no_such_type_xyz"], 4, "no such struct"),
    (["expr", "p wake_up_new_task a=%0->nope"], 6, "not a member"),
])
def test_errors_are_one_line(hive, tmp_path, args, code, needle):
    empty = str(tmp_path / "empty-hive")
    use_hive = empty if args == ["offset", "task_struct.files"] else hive
    p = run(["--hive", use_hive] + args, cwd=tmp_path)
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert needle in p.stderr + p.stdout
    assert "Traceback" not in p.stderr
    assert len([x for x in p.stderr.splitlines() if x.startswith("resolver: error")]) <= 1


def test_help_has_examples():
    p = run(["--help"])
    assert p.returncode == 0 and "Examples:" in p.stdout and "resolver offset" in p.stdout
    for cmd in ("offset", "struct", "dump", "func", "matrix", "expr", "serve"):
        assert cmd in p.stdout
        assert run([cmd, "--help"]).returncode == 0


def test_struct_func_dump(hive):
    p = run(["struct", "--hive", hive, "--json", "sock_common"])
    s = json.loads(p.stdout)
    assert s["name"] == "struct sock_common" and s["members"]
    assert {"name", "type", "offset", "size", "bit_offset", "bit_size"} <= set(s["members"][0])
    p = run(["func", "--hive", hive, "--json", "do_filp_open"])
    f = json.loads(p.stdout)["functions"]["do_filp_open"][0]
    assert f["ret"] == "struct file *" and [x["name"] for x in f["params"]] == [
        "dfd", "pathname", "op"]
    p = run(["func", "--hive", hive, "do_filp_open"])
    assert "struct file *do_filp_open(int dfd, struct filename *pathname" in p.stdout
    p = run(["dump", "--hive", hive])
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    objs = [json.loads(x) for x in lines]
    conn = sqlite3.connect(select.choose_db(hive=hive).path)
    n = conn.execute("SELECT COUNT(*) FROM (SELECT DISTINCT kind, name FROM kt_types WHERE "
                     "kind IN ('struct','union') AND name IS NOT NULL AND size IS NOT NULL)"
                     ).fetchone()[0]
    assert len(objs) == n
    ts = [o for o in objs if o["name"] == "struct task_struct"][0]
    assert ts["size"] > 1000 and len(ts["members"]) > 100


def test_matrix(hive):
    paths = ["task_struct.files", "sock.__sk_common.skc_state", "task_struct.state",
             "sock.__sk_common.skc_ipv6only"]
    p = run(["matrix", "--hive", hive, "--json"] + paths)
    rows = json.loads(p.stdout)
    assert len(rows) == 2
    for row in rows:
        with Resolver.open(db=row["kernel"]["db"], overlay=None) as r:
            for path in paths:
                if "error" in row["offsets"][path]:
                    with pytest.raises(LookupError):
                        r.offset(path)
                else:
                    assert row["offsets"][path]["offset"] == r.offset(path).offset
    p = run(["matrix", "--hive", hive, "--csv"] + paths)
    lines = p.stdout.strip().splitlines()
    assert lines[0].split(",")[:3] == ["release", "arch", "build_id"] and len(lines) == 3
    p = run(["matrix", "--hive", hive] + paths)
    assert DEBIAN_RELEASE in p.stdout and " - " in p.stdout + " "


def test_selection_rules(tmp_path, running_db, monkeypatch):
    ident = select.running_identity()
    monkeypatch.setattr(select, "running_identity",
                        lambda: select.Identity(ident.release, ident.arch, ident.build_id))
    h = str(tmp_path / "hive")
    base = {"release": ident.release, "arch": ident.arch, "distro": "a", "flavour": "normal"}
    # same release, other build-id; a debug build with the right build-id
    other = _place(h, running_db, {**base, "build_id": "00" * 20, "distro": "a"})
    c = select.choose_db(hive=h)
    assert c.path == other and any("another build" in w for w in c.warnings)
    _place(h, running_db, {**base, "build_id": ident.build_id, "flavour": "debug",
                           "distro": "c"}, name=f"info-{ident.release}+debug.db")
    c = select.choose_db(hive=h)
    assert c.path == other                       # debug never stands for a normal kernel
    exact = _place(h, running_db, {**base, "build_id": ident.build_id, "distro": "b"})
    c = select.choose_db(hive=h)
    assert c.path == exact and not c.warnings    # build-id match wins
    with pytest.raises(NoKernelDB, match="build-id"):
        select.choose_db(hive=h, release=ident.release, build_id="11" * 20)
    assert select.choose_db(hive=h, release=ident.release).path in (other, exact)
    with pytest.raises(NoKernelDB, match="the hive has"):
        select.choose_db(hive=h, release=ident.release, arch="aarch64")


def _overlay_graph() -> M.TypeGraph:
    """A custom module's types, as kobuild would store them: a new struct and a
    `struct file` with another layout (the overlay must win for it)."""
    g = M.TypeGraph(source="dwarf")
    i32 = g.add(M.Type(M.INT, "int", 4, signed=True, encoding="signed"))
    ts = g.add(M.Type(M.STRUCT, "task_struct", None))          # declared only
    pts = g.add(M.Type(M.PTR, None, 8, ref=ts))
    mine = g.add(M.Type(M.STRUCT, "my_mod_state", 24, members=[
        M.Member("a", i32, 0), M.Member("t", pts, 64), M.Member("b", i32, 128, 3)]))
    g.add(M.Type(M.STRUCT, "file", 16, members=[M.Member("f_pos", i32, 96)]))
    proto = g.add(M.Type(M.FUNC_PROTO, None, None, ref=i32,
                         params=[M.Param("st", g.add(M.Type(M.PTR, None, 8, ref=mine)))]))
    g.functions.append(M.Function("my_mod_fn", proto, False, "mymod.c", 7, "mymod"))
    return g


def test_overlay_prev_db(tmp_path, hive):
    # the overlay says it is for the running kernel (the hive's DB the commands choose)
    store.write_db(_overlay_graph(), {"release": running_meta()["release"], "arch": "x86_64"},
                   str(tmp_path / "prev.db"))
    p = run(["offset", "--hive", hive, "--json", "my_mod_state.t", "my_mod_state.b",
             "my_mod_state->t->files", "file.f_pos", "task_struct.files"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)["offsets"]
    assert out["my_mod_state.t"]["offset"] == 8
    assert out["my_mod_state.b"]["bit_size"] == 3
    assert out["file.f_pos"]["offset"] == 12               # the overlay's layout first
    assert out["my_mod_state->t->files"]["offset"] == out["task_struct.files"]["offset"]
    p = run(["func", "--hive", hive, "my_mod_fn"], env={"LBC_PREVDB": str(tmp_path / "prev.db")})
    assert "my_mod_fn(struct my_mod_state *st)" in p.stdout
    p = run(["--no-overlay", "offset", "--hive", hive, "my_mod_state.t"], cwd=tmp_path)
    assert p.returncode == 4
    # the same overlay saying another kernel: refused, one line
    store.write_db(_overlay_graph(), {"release": "mod", "arch": "x86_64"},
                   str(tmp_path / "other.db"))
    p = run(["--overlay", str(tmp_path / "other.db"), "offset", "--hive", hive,
             "my_mod_state.t"])
    assert p.returncode == 3 and "is for kernel mod" in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1 and p.stdout == ""
