"""`resolver serve` under load and abuse, as a real process on loopback: a real HTTP load
tool (wrk, from Debian) for latency and errors with the server's memory flat; one request
asking for 64 BTF blobs; a client sending a byte at a time; more connections than the
server admits."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from scripts.realdata import RUNNING_BTF
from tests.support import need_tool

BIN = os.path.dirname(sys.executable)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    hive = tmp_path_factory.mktemp("hive")
    subprocess.run([f"{BIN}/dbhive", "build", RUNNING_BTF, "--hive", str(hive)], check=True,
                   capture_output=True)
    port = _free_port()
    p = subprocess.Popen([f"{BIN}/resolver", "serve", "--hive", str(hive), "--port", str(port),
                          "--deadline", "3"], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).read()
            break
        except OSError:
            time.sleep(0.05)
    release = os.uname().release
    yield p, url, port, release
    p.terminate()
    p.wait(10)


def _post(url, body, timeout=30):
    req = urllib.request.Request(url + "/lbc", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def test_64_btf_commands_in_one_request(server):
    p, url, _port, release = server
    one = json.loads(_post(url, [{"cmd": "btf", "ver": release, "arch": "x86_64"}]))
    assert one["res"][0]["log"] == "ok."
    rss_before = vm_kb(p.pid, "VmRSS")
    raw = _post(url, [{"cmd": "btf", "ver": release, "arch": "x86_64"}] * 64)
    reply = json.loads(raw)["res"]
    assert len(raw) < (32 << 20) + (16 << 20)        # the reply cap, plus one blob
    assert sum(r["log"] == "ok." for r in reply) < 64
    assert all(r["log"] == "ok." or r["log"].startswith("reply too large") for r in reply)
    assert vm_kb(p.pid, "VmHWM") - rss_before < 400 * 1024      # KB: far from 470 MB x N


def test_a_client_sending_a_byte_at_a_time_is_cut_off(server):
    _p, _url, port, _release = server
    s = socket.create_connection(("127.0.0.1", port))
    body = b'[{"cmd": "struct", "struct": "struct file"}]'
    head = (f"POST /lbc HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    t0 = time.monotonic()
    closed = False
    for b in head + body:
        try:
            s.send(bytes([b]))
        except OSError:
            closed = True
            break
        time.sleep(0.2)
        if time.monotonic() - t0 > 10:
            break
    if not closed:
        s.settimeout(5)
        try:
            closed = s.recv(1) == b""
        except OSError:
            closed = True
    s.close()
    assert closed and time.monotonic() - t0 < 10      # the 3 s deadline, not per-byte reads


def test_more_connections_than_admitted_get_503_not_a_hang(server):
    _p, url, port, _release = server
    idle = []
    for _ in range(200):                  # 32 workers + 128 queued; the rest turned away
        c = socket.create_connection(("127.0.0.1", port))
        idle.append(c)
    busy = 0
    for c in idle[-30:]:
        c.settimeout(5)
        try:
            busy += b"503" in c.recv(200)
        except OSError:
            pass
    for c in idle:
        c.close()
    assert busy >= 10
    time.sleep(3.5)                       # the idle admitted ones hit their deadline
    assert urllib.request.urlopen(url + "/healthz", timeout=5).status == 200


def test_wrk_load(server, tmp_path):
    """wrk, 64 connections, 10 s of lbc struct queries: no errors, p99 bounded, memory flat."""
    need_tool("wrk")
    p, url, _port, release = server
    script = tmp_path / "post.lua"
    body = json.dumps([{"cmd": "struct", "ver": release, "arch": "x86_64",
                        "struct": "struct task_struct"}])
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'wrk.body = {json.dumps(body)}\n')
    _post(url, json.loads(body))                                   # warm the caches
    rss_start = vm_kb(p.pid, "VmRSS")
    out = subprocess.run(["wrk", "-t", "2", "-c", "64", "-d", "10s", "--timeout", "10s",
                          "--latency", "-s", str(script), url + "/lbc"], capture_output=True,
                         text=True, check=True).stdout
    rss_end = vm_kb(p.pid, "VmRSS")
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    print(f"\nwrk: {requests} requests, p50 {lat.get('50')}, p99 {lat.get('99')}, "
          f"RSS {rss_start // 1024} -> {rss_end // 1024} MB; {errors and errors.group(1)}")
    assert requests > 100 and not non2xx and not errors, out
    assert rss_end < rss_start * 1.5 + 20 * 1024, (rss_start, rss_end)
