#!/usr/bin/env python3
"""Build real RPM test fixtures with Debian's `rpmbuild`, around real payloads.

No RPM distro repository is reachable, so the RPM input path is tested with packages built
here by the real RPM tool: the real Debian vmlinux laid out as a Fedora/RHEL
`kernel-debuginfo` package, and small packages around real kernel modules taken from the
Debian debuginfo package (one per payload compression).

    make_rpm_fixture.py small [--cache DIR]   # 4 compressions, symlink layouts (seconds)
    make_rpm_fixture.py big   [--cache DIR]   # the 587 MB vmlinux, zstd (~1 min)
    make_rpm_fixture.py build NAME VERSION RELEASE PAYLOAD --file SRC=DEST ... --symlink DEST=TARGET ...

Outputs go to $DBHIVE_TEST_CACHE/rpm-fixtures (default /var/cache/dbhive-ci/rpm-fixtures)
and are reused when present; each command prints the RPM paths it provides, one a line.

Why only the big package uses zstd: compressing a 587 MB payload with xz takes minutes;
every compression is exercised by the small packages instead, whose stand-in "vmlinux" is a
real .ko (the archive code does not care what the member holds; identity tests use the big
package, whose vmlinux is the real kernel).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from scripts.realdata import CACHE, DEBIAN_DBG_PKG as DEB, DEBIAN_RELEASE as RELEASE

MODDIR = f"usr/lib/debug/lib/modules/{RELEASE}"
# two small real modules (DWARF included) near the start of the Debian package's data.tar
KO_MEMBERS = (f"{MODDIR}/kernel/arch/x86/crypto/aegis128-aesni.ko",
              f"{MODDIR}/kernel/arch/x86/crypto/crc32c-intel.ko")
# rpm's payload compressor macro per compression (w<level>.<io>)
PAYLOADS = {"xz": "w2.xzdio", "zstd": "w3.zstdio", "gzip": "w6.gzdio", "bzip2": "w9.bzdio"}
BIG = 64 << 20
BUILD_ID_DIR = "usr/lib/debug/.build-id/4f"    # sorts before usr/lib/debug/boot and lib

SPEC = """\
Name: {name}
Version: {version}
Release: {release}
Summary: dbhive test fixture ({name})
License: GPL-2.0-only
BuildArch: x86_64
AutoReqProv: no
%define _binary_payload {payload}
%define debug_package %{{nil}}
%define __os_install_post %{{nil}}
%define _build_id_links none
%define _binary_filedigest_algorithm 8

%description
Test fixture for dbhive, made by scripts/make_rpm_fixture.py.

%install
{install}

%files
{files}
"""


def out_dir(cache: str) -> str:
    path = os.path.join(cache, "rpm-fixtures")
    os.makedirs(path, exist_ok=True)
    return path


def build_rpm(cache: str, name: str, version: str, release: str, payload: str,
              files: list[tuple[str, str]], symlinks: list[tuple[str, str]] = (),
              hardlinks: list[tuple[str, str]] = ()) -> str:
    """Build NAME-VERSION-RELEASE.x86_64.rpm (unless cached) holding `files` (source path,
    member path), `symlinks` (member path, link target) and `hardlinks` (member path, member
    path it is a hard link to).  Returns the RPM path."""
    final = os.path.join(out_dir(cache), f"{name}-{version}-{release}.x86_64.rpm")
    if os.path.exists(final):
        return final
    with tempfile.TemporaryDirectory(prefix="rpmfix-", dir=out_dir(cache)) as top:
        install, listed = [], []
        for src, dest in files:
            install.append(f"mkdir -p %{{buildroot}}/{os.path.dirname(dest)}")
            if os.path.getsize(src) > BIG:
                # a hard link when possible: the big payload is not copied once more
                install.append(f"ln {src} %{{buildroot}}/{dest} 2>/dev/null || "
                               f"cp {src} %{{buildroot}}/{dest}")
            else:
                # a copy: two members from one source must not become an rpm hardlink set
                install.append(f"cp {src} %{{buildroot}}/{dest}")
            listed.append("/" + dest)
        for dest, other in hardlinks:
            install.append(f"mkdir -p %{{buildroot}}/{os.path.dirname(dest)}")
            install.append(f"ln %{{buildroot}}/{other} %{{buildroot}}/{dest}")
            listed.append("/" + dest)
        for dest, target in symlinks:
            install.append(f"mkdir -p %{{buildroot}}/{os.path.dirname(dest)}")
            install.append(f"ln -s {target} %{{buildroot}}/{dest}")
            listed.append("/" + dest)
        spec = os.path.join(top, f"{name}.spec")
        with open(spec, "w") as fh:
            fh.write(SPEC.format(name=name, version=version, release=release,
                                 payload=PAYLOADS[payload], install="\n".join(install),
                                 files="\n".join(listed)))
        subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}",
                        "--define", "_rpmdir %{_topdir}/out", "--nodeps", spec],
                       check=True, stdout=subprocess.DEVNULL)
        built = os.path.join(top, "out", "x86_64", os.path.basename(final))
        os.replace(built, final)
    return final


def debian_deb(cache: str) -> str:
    found = sorted(f for f in os.listdir(cache) if f.startswith(DEB + "_") and f.endswith(".deb"))
    if not found:
        subprocess.run(["apt-get", "download", "-q", DEB], cwd=cache, check=True,
                       stdout=subprocess.DEVNULL)
        return debian_deb(cache)
    return os.path.join(cache, found[-1])


def real_modules(cache: str) -> list[str]:
    """The KO_MEMBERS, extracted once from the Debian package with dpkg-deb | tar."""
    dest = os.path.join(out_dir(cache), "ko")
    paths = [os.path.join(dest, os.path.basename(m)) for m in KO_MEMBERS]
    if all(os.path.exists(p) for p in paths):
        return paths
    tmp = tempfile.mkdtemp(prefix="ko-", dir=out_dir(cache))
    # dpkg-deb complains of the broken pipe when tar stops early: silence it
    p1 = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", debian_deb(cache)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    # --occurrence: stop reading once both members are out (they are near the start)
    subprocess.run(["tar", "-x", "-C", tmp, "--occurrence=1", *("./" + m for m in KO_MEMBERS)],
                   stdin=p1.stdout, check=True)
    p1.stdout.close()
    p1.wait()
    os.makedirs(dest, exist_ok=True)
    for m, p in zip(KO_MEMBERS, paths):
        os.replace(os.path.join(tmp, m), p)
    shutil.rmtree(tmp)
    return paths


def debian_vmlinux(cache: str) -> str:
    """The real vmlinux, extracted with dpkg-deb | tar (same file the test conftest uses)."""
    out = os.path.join(cache, f"vmlinux-{RELEASE}")
    if not os.path.exists(out):
        with open(out + ".part", "wb") as fh:
            p1 = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", debian_deb(cache)],
                                  stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-O", f"./usr/lib/debug/boot/vmlinux-{RELEASE}"],
                           stdin=p1.stdout, stdout=fh, check=True)
            p1.stdout.close()
            p1.wait()
        os.replace(out + ".part", out)
    return out


def small_set(cache: str) -> list[str]:
    ko1, ko2 = real_modules(cache)
    mods = [(ko1, KO_MEMBERS[0]), (ko2, KO_MEMBERS[1])]
    rpms = []
    for comp in PAYLOADS:       # stand-in vmlinux = a real .ko, alone in the payload
        rpms.append(build_rpm(cache, "kernel-debuginfo", "6.1.0", f"47.small.{comp}", comp,
                              [(ko1, f"{MODDIR}/vmlinux")]))
    # the kernel member is a symlink to a file that came earlier in the cpio stream
    rpms.append(build_rpm(cache, "kernel-debuginfo", "6.1.0", "47.symlink.back", "zstd",
                          [(ko2, f"{BUILD_ID_DIR}/61d8f6.debug")],
                          [(f"{MODDIR}/vmlinux", "../../../.build-id/4f/61d8f6.debug")]))
    # a chain: boot/vmlinux-R -> (later) modules/R/vmlinux -> (earlier) .build-id file
    rpms.append(build_rpm(cache, "kernel-debuginfo", "6.1.0", "47.symlink.chain", "gzip",
                          [(ko2, f"{BUILD_ID_DIR}/61d8f6.debug")],
                          [(f"usr/lib/debug/boot/vmlinux-{RELEASE}",
                            f"../lib/modules/{RELEASE}/vmlinux"),
                           (f"{MODDIR}/vmlinux", "/usr/lib/debug/.build-id/4f/61d8f6.debug")]))
    # cpio hard links: rpm stores the data with the last link of a set (in path order),
    # earlier links are empty entries.  Kernel member empty, data on a module ...
    rpms.append(build_rpm(cache, "kernel-debuginfo", "6.1.0", "47.hardlink.kernel", "xz",
                          [(ko1, KO_MEMBERS[0])],
                          hardlinks=[(f"usr/lib/debug/boot/vmlinux-{RELEASE}", KO_MEMBERS[0])]))
    # ... and a module empty, data on the kernel member
    rpms.append(build_rpm(cache, "kernel-debuginfo", "6.1.0", "47.hardlink.module", "xz",
                          [(ko1, KO_MEMBERS[0])],
                          hardlinks=[(f"{MODDIR}/vmlinux", KO_MEMBERS[0])]))
    # links that must be refused: dangling, and escaping the package root
    rpms.append(build_rpm(cache, "kernel-debuginfo", "6.1.0", "47.symlink.dangling", "gzip",
                          [(ko2, KO_MEMBERS[1])],
                          [(f"{MODDIR}/vmlinux", "vmlinux-missing")]))
    rpms.append(build_rpm(cache, "kernel-debuginfo", "6.1.0", "47.symlink.escape", "gzip",
                          [(ko2, KO_MEMBERS[1])],
                          [(f"{MODDIR}/vmlinux", "../../../../../../../../etc/passwd")]))
    # modules, and no vmlinux
    rpms.append(build_rpm(cache, "kernel-modules-debuginfo", "6.1.0", "47.small.xz", "xz",
                          mods))
    return rpms


def big_set(cache: str) -> list[str]:
    vmlinux = debian_vmlinux(cache)
    return [
        build_rpm(cache, "kernel-debuginfo", "6.1.0", "47.big.zstd", "zstd",
                  [(vmlinux, f"{MODDIR}/vmlinux")]),
        # the debug flavour, laid out as Fedora does (release directory with +debug)
        build_rpm(cache, "kernel-debug-debuginfo", "6.1.0", "47.big.zstd", "zstd",
                  [(vmlinux, f"usr/lib/debug/lib/modules/{RELEASE}+debug/vmlinux")]),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=CACHE)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("small")
    sub.add_parser("big")
    b = sub.add_parser("build")
    b.add_argument("name")
    b.add_argument("version")
    b.add_argument("release")
    b.add_argument("payload", choices=sorted(PAYLOADS))
    b.add_argument("--file", action="append", default=[], metavar="SRC=DEST")
    b.add_argument("--symlink", action="append", default=[], metavar="DEST=TARGET")
    args = ap.parse_args(argv)
    os.makedirs(args.cache, exist_ok=True)
    if args.cmd == "small":
        paths = small_set(args.cache)
    elif args.cmd == "big":
        paths = big_set(args.cache)
    else:
        pairs = lambda items: [tuple(i.split("=", 1)) for i in items]    # noqa: E731
        paths = [build_rpm(args.cache, args.name, args.version, args.release, args.payload,
                           pairs(args.file), pairs(args.symlink))]
    print("\n".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
