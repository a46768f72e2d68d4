"""`resolver serve`: driven by the real surftrace client in remote mode, and by garbage.

The surftrace client always connects to port 80 of $LBC_SERVER, so the server listens on
port 80 of a random 127.0.0.0/8 address (loopback only).
"""
from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import urllib.request

import pytest

from resolver.server import MAX_BODY, make_server
from tests.support.resolver_dbs import debian_meta, running_meta
from tests.support.surftrace_client import CONTRACT, surftrace_show

from scripts.realdata import DEBIAN_RELEASE


@pytest.fixture(scope="module")
def hive(tmp_path_factory, running_btf, debian_vmlinux):
    """A hive made by the real builder: the running kernel (its BTF kept beside its DB for
    the `btf` command) and the Debian 6.1 kernel."""
    from dbhive.build import build
    h = tmp_path_factory.mktemp("hive")
    build(running_btf, hive=str(h), distro="local")
    build(debian_vmlinux, hive=str(h), distro="debian", source="btf")
    return str(h)


@pytest.fixture(scope="module")
def server(hive):
    if os.geteuid() != 0:
        pytest.fail("the surftrace client needs the server on port 80: run the tests as root")
    last = None
    for _ in range(20):
        host = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
        try:
            srv = make_server(hive=hive, host=host, port=80)
            break
        except OSError as e:
            last = e
    else:
        pytest.fail(f"cannot bind port 80 on a loopback address: {last}")
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _host(server):
    return server.server_address[0]


def post(server, path, body, raw=False, timeout=10):
    data = body if raw else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{_host(server)}:80{path}", data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_unmodified_client_remote_mode(server, hive, tmp_path):
    """`LBC_SERVER=<us> surftrace -S ...` equals `surftrace -m local -d <db> -S ...`."""
    os.environ["LBC_SERVER"] = _host(server)
    try:
        remote = surftrace_show_remote(CONTRACT, tmp_path)
    finally:
        del os.environ["LBC_SERVER"]
    db = os.path.join(hive, running_meta()["arch"], "db", "local",
                      f"info-{running_meta()['release']}.db")
    assert remote == surftrace_show(db, CONTRACT, tmp_path)


def surftrace_show_remote(exprs, tmp_path):
    import subprocess
    import sys
    exe = os.path.join(os.path.dirname(sys.executable), "surftrace")
    inst = "/sys/kernel/debug/tracing/instances/surftrace"
    script = ('mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug; '
              f'had=0; [ -d {inst} ] && had=1; "$@"; rc=$?; '
              f'[ $had = 0 ] && rmdir {inst} 2>/dev/null; exit $rc')
    env = {k: v for k, v in os.environ.items() if k != "LBC_PREVDB"}
    p = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", exe, "-S"] + list(exprs),
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    import ast
    return [ast.literal_eval(x) for x in p.stdout.splitlines() if x.startswith("{'type'")]


def test_client_classes_against_local_reader(server, hive, monkeypatch, tmp_path):
    """Every lbc answer equals what the client's own local-mode reader gives on the DB."""
    monkeypatch.chdir(tmp_path)                 # no ./prev.db
    monkeypatch.delenv("LBC_PREVDB", raising=False)
    from surftrace.baseDbParser import CbaseDbParser
    from surftrace.lbcClient import ClbcClient
    for meta in (running_meta(), debian_meta()):
        db = os.path.join(hive, meta["arch"], "db", meta["distro"], f"info-{meta['release']}.db")
        local = CbaseDbParser(db)
        cli = ClbcClient(server=_host(server), ver=meta["release"], arch=meta["arch"], port=80)
        for s in ("struct task_struct", "struct sock", "struct iphdr", "union bpf_attr",
                  "atomic_t", "struct file"):
            assert cli.getStruct(s) == local.getStruct(s), s
        for t in ("int", "unsigned int", "u64", "long unsigned int", "struct file *"):
            want = local.getType(t)
            assert cli.getType(t) == want, t
        for f in ("do_filp_open", "vfs_read", "tcp_sendmsg"):
            got, want = cli.getFunc(f), local.getFunc(f)
            for g_, w in zip(got["res"], want["res"]):
                assert (g_["func"], g_["args"], g_["ret"]) == (w["func"], w["args"], w["ret"])
        got = cli.getFunc("vfs_r%")
        assert got["log"] == "ok." and all(x["func"].startswith("vfs_r") for x in got["res"])
        got = cli.getFunc("%", ret="ssize_t")["res"]
        assert got and all(x["ret"].endswith("ssize_t") for x in got)
        got = cli.getFunc("%", arg="struct file *")["res"]
        assert got and all("struct file *" in x["args"] for x in got)
        missing = cli.getStruct("struct no_such_struct_xyz")
        assert missing == {"log": "ok.", "res": None}


def test_btf_command(server, hive, running_btf, debian_vmlinux_btf):
    from surftrace.lbcClient import ClbcClient, segDecode
    from surftrace.surfException import DbException
    m = running_meta()
    cli = ClbcClient(server=_host(server), ver=m["release"], arch=m["arch"], port=80)
    with open(running_btf, "rb") as fh:
        assert segDecode(cli.getBtf()["btf"]) == fh.read()
    # the Debian kernel's .BTF section, kept by the build, equals objcopy's dump of it
    cli = ClbcClient(server=_host(server), ver=DEBIAN_RELEASE, arch="x86_64", port=80)
    with open(debian_vmlinux_btf, "rb") as fh:
        assert segDecode(cli.getBtf()["btf"]) == fh.read()
    os.unlink(os.path.join(hive, "x86_64", "btf", f"{DEBIAN_RELEASE}.btf"))
    with pytest.raises(DbException):               # no BTF kept for it any more: says so
        cli.getBtf()


def test_json_api(server):
    st, body = post(server, "/api/offset", {"release": DEBIAN_RELEASE, "arch": "x86_64",
                                            "paths": ["task_struct.files", "nope.x"]})
    assert st == 200 and body["kernel"]["release"] == DEBIAN_RELEASE
    assert isinstance(body["offsets"]["task_struct.files"]["offset"], int)
    assert "error" in body["offsets"]["nope.x"]
    st, body = post(server, "/api/struct", {"release": DEBIAN_RELEASE, "name": "iphdr"})
    assert st == 200 and body["size"] == 20
    st, body = post(server, "/api/func", {"release": DEBIAN_RELEASE, "name": "do_filp_open"})
    assert st == 200 and body["functions"][0]["ret"] == "struct file *"
    st, body = post(server, "/api/expr", {"release": DEBIAN_RELEASE, "probes": CONTRACT[:2]})
    assert st == 200 and body["probes"][0]["line"].startswith("p:p0 wake_up_new_task comm=")
    st, body = post(server, "/api/struct", {"release": DEBIAN_RELEASE, "name": "nope_xyz"})
    assert st == 404 and "no such" in body["error"]
    with urllib.request.urlopen(f"http://{_host(server)}:80/api/kernels", timeout=5) as r:
        assert len(json.loads(r.read())["kernels"]) == 2


GARBAGE = [
    b"", b"{", b"null", b"[]", b"[1,2,3]", b'"x"', b"\xff\xfe\x00garbage",
    json.dumps([{"cmd": "struct"}]).encode(),
    json.dumps([{"cmd": "struct", "ver": 5, "arch": [], "struct": {}}]).encode(),
    json.dumps([{"cmd": "nope", "ver": DEBIAN_RELEASE}]).encode(),
    json.dumps([{"cmd": "struct", "ver": DEBIAN_RELEASE, "arch": "x86_64",
                 "struct": "struct x' OR '1'='1"}]).encode(),
    json.dumps([{"cmd": "struct", "ver": DEBIAN_RELEASE, "arch": "x86_64",
                 "struct": "x'; DROP TABLE members; --"}]).encode(),
    json.dumps([{"cmd": "func", "ver": DEBIAN_RELEASE, "arch": "x86_64",
                 "func": "%' UNION SELECT sql,1,1,1,1 FROM sqlite_master --"}]).encode(),
    json.dumps([{"cmd": "type", "ver": "../../../../etc/passwd", "arch": "../x"}]).encode(),
    json.dumps([{"cmd": "struct", "ver": DEBIAN_RELEASE, "struct": "a" * 100000}]).encode(),
    json.dumps([{"cmd": "struct"}] * 1000).encode(),
    json.dumps({"release": DEBIAN_RELEASE, "paths": ["a.b' OR 1=1"] * 1000}).encode(),
    json.dumps([[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]).encode(),
]


def test_garbage_never_takes_it_down(server):
    for body in GARBAGE:
        for path in ("/lbc", "/api/offset", "/api/expr", "/nope"):
            st, reply = post(server, path, body, raw=True)
            assert st in (200, 400, 404, 413), (path, body[:80], st)
            if st == 200 and path == "/lbc":
                assert all(r["log"] != "ok." or r.get("res") in (None, [])
                           for r in reply["res"]), (body[:80], reply)
    # the injection attempts changed nothing and leaked nothing
    st, reply = post(server, "/lbc", [{"cmd": "struct", "ver": DEBIAN_RELEASE,
                                       "arch": "x86_64", "struct": "struct iphdr"}])
    assert reply["res"][0]["res"]["size"] == 20


def test_huge_body_refused_unread(server):
    s = socket.create_connection((_host(server), 80), timeout=5)
    s.sendall(b"POST /lbc HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY * 50))
    s.sendall(b"[" * 4096)
    data = s.recv(4096)
    s.close()
    assert b" 413 " in data.split(b"\r\n", 1)[0]


def test_raw_socket_garbage_and_idle_clients(server):
    idle = [socket.create_connection((_host(server), 80), timeout=5) for _ in range(8)]
    junk = socket.create_connection((_host(server), 80), timeout=5)
    junk.sendall(os.urandom(3000) + b"\r\n\r\n")
    try:
        junk.recv(1024)
    except OSError:
        pass
    junk.close()
    half = socket.create_connection((_host(server), 80), timeout=5)
    half.sendall(b"POST /lbc HTTP/1.1\r\nContent-Length: 100\r\n\r\n[{")   # never finished
    st, reply = post(server, "/lbc", [{"cmd": "type", "ver": DEBIAN_RELEASE,
                                       "arch": "x86_64", "type": "int"}])
    assert st == 200 and reply["res"][0]["res"]["size"] == 4
    for s in idle + [half]:
        s.close()


def test_many_concurrent_clients(server):
    want = post(server, "/api/offset", {"release": DEBIAN_RELEASE,
                                        "paths": ["sock.__sk_common.skc_family"]})[1]
    errors, done = [], []

    def worker(i):
        try:
            for j in range(15):
                if (i + j) % 3 == 0:
                    st, body = post(server, "/lbc", [{"cmd": "struct", "ver": DEBIAN_RELEASE,
                                                      "arch": "x86_64",
                                                      "struct": "struct sock_common"}])
                    assert st == 200 and body["res"][0]["res"]["name"] == "struct sock_common"
                elif (i + j) % 3 == 1:
                    st, body = post(server, "/api/offset", {
                        "release": DEBIAN_RELEASE, "paths": ["sock.__sk_common.skc_family"]})
                    assert st == 200 and body == want
                else:
                    st, _ = post(server, "/lbc", b"{garbage", raw=True)
                    assert st == 400
            done.append(i)
        except Exception as e:      # collected and reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(48)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(done) == 48
    assert time.monotonic() - t0 < 60
