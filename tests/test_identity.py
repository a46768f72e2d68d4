"""dbhive.identity and dbhive.elf on real kernels: the Debian vmlinux (directly and through
a real kernel-debuginfo / kernel-debug-debuginfo RPM made by scripts/make_rpm_fixture.py),
this machine's running kernel and its BTF.  Oracles: readelf, uname, sha256sum, objcopy."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess

import pytest

from scripts.realdata import DEBIAN_RELEASE
from tests.support import need_tool
from dbhive.elf import elf_section_bytes, has_section, parse_notes
from dbhive.errors import InputError
from dbhive.identity import (file_sha256, identify, kernel_flavour, kernel_identity,
                             raw_btf_identity, release_from_name, running_kernel_identity)
from tests.support.rpms import make_rpms

SMALL_KO = "aegis128-aesni.ko"


def readelf_build_id(path: str) -> str:
    need_tool("readelf")
    out = subprocess.run(["readelf", "-n", path], check=True, capture_output=True,
                         text=True).stdout
    return re.search(r"Build ID: ([0-9a-f]+)", out).group(1)


def run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def big_rpms() -> dict[str, str]:
    """The real vmlinux in kernel-debuginfo and kernel-debug-debuginfo RPMs (zstd; built once,
    ~20 s, then cached)."""
    return make_rpms("big")


@pytest.mark.slow
def test_debian_vmlinux_identity(debian_vmlinux):
    ident = kernel_identity(debian_vmlinux)
    assert ident.release == DEBIAN_RELEASE
    assert ident.release_source == "banner"
    assert ident.arch == "x86_64"
    assert ident.build_id == readelf_build_id(debian_vmlinux)
    assert ident.flavour == "cloud-amd64"
    assert ident.elf_type == "EXEC"
    assert ident.has_btf and ident.has_debug_info
    # the file name agrees with what the kernel says about itself
    assert release_from_name(debian_vmlinux) == ident.release
    meta = ident.as_meta()
    assert meta["release"] == DEBIAN_RELEASE and meta["has_btf"] == "1"
    assert all(isinstance(v, str) for v in meta.values())


@pytest.mark.slow
def test_release_from_init_uts_ns(debian_vmlinux):
    """The fallback when there is no banner: init_uts_ns via the symbol table (~5 s)."""
    from dbhive.elf import ElfFile
    from dbhive.identity import _release_from_uts
    with ElfFile(debian_vmlinux) as elf:
        assert _release_from_uts(elf) == DEBIAN_RELEASE


@pytest.mark.slow
def test_btf_section_bytes(debian_vmlinux, debian_vmlinux_btf):
    """elf_section_bytes vs objcopy's dump of the same section."""
    assert has_section(debian_vmlinux, ".BTF")
    data = elf_section_bytes(debian_vmlinux, ".BTF")
    with open(debian_vmlinux_btf, "rb") as fh:
        assert data == fh.read()
    assert data[:2] == b"\x9f\xeb"


def test_section_bytes_missing():
    assert not has_section("/bin/ls", ".BTF")
    with pytest.raises(InputError, match=r"/bin/ls: no \.BTF section"):
        elf_section_bytes("/bin/ls", ".BTF")
    with pytest.raises(InputError, match="not a valid ELF"):
        elf_section_bytes("/etc/hostname", ".BTF")


@pytest.mark.slow
def test_identity_through_rpm(big_rpms, debian_vmlinux, tmp_path):
    ex, ident = identify(big_rpms["big.zstd"], str(tmp_path))
    assert ex.member == f"usr/lib/debug/lib/modules/{DEBIAN_RELEASE}/vmlinux"
    assert ident.release == DEBIAN_RELEASE
    assert ident.build_id == readelf_build_id(debian_vmlinux)
    assert ident.flavour == "cloud-amd64"
    ex.cleanup()
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_debug_flavour_from_kernel_debug_debuginfo(big_rpms, tmp_path):
    path = big_rpms["kernel-debug-debuginfo-6.1.0-47.big.zstd"]
    ex, ident = identify(path, str(tmp_path))
    assert ex.package_name == "kernel-debug-debuginfo"
    assert ex.member == f"usr/lib/debug/lib/modules/{DEBIAN_RELEASE}+debug/vmlinux"
    assert ident.flavour == "debug"
    assert ident.release == DEBIAN_RELEASE      # the kernel's own word, not the path's
    ex.cleanup()


def test_running_kernel():
    ident = running_kernel_identity()
    assert ident.release == run("uname", "-r")
    assert ident.arch == run("uname", "-m")
    # oracle: the GNU build-id note found in the raw bytes by a plain regex (namesz=4,
    # descsz=N, type=3, "GNU\0"), independently of parse_notes
    with open("/sys/kernel/notes", "rb") as fh:
        raw = fh.read()
    m = re.search(rb"\x04\x00\x00\x00(.)\x00\x00\x00\x03\x00\x00\x00GNU\x00", raw, re.S)
    assert m, "no GNU build-id note in /sys/kernel/notes"
    size = m.group(1)[0]
    assert ident.build_id == raw[m.end():m.end() + size].hex()
    assert len(ident.build_id) == 40


def test_running_btf_identity(running_btf):
    ident = kernel_identity(running_btf)
    assert ident.source == "raw-btf" and ident.release == os.uname().release
    assert ident.build_id == running_kernel_identity().build_id
    assert ident.btf_sha256 == run("sha256sum", running_btf).split()[0]
    assert ident.has_btf and not ident.has_debug_info


def test_btfhub_file_identity(running_btf, tmp_path):
    """A raw BTF file elsewhere: release from its btfhub name, arch from its directory."""
    d = tmp_path / "arm64"
    d.mkdir()
    path = d / "5.4.0-1009-aws.btf"
    path.write_bytes(open(running_btf, "rb").read())
    ident = kernel_identity(str(path))
    assert (ident.release, ident.arch, ident.flavour) == ("5.4.0-1009-aws", "aarch64", "aws")
    assert ident.build_id == "" and ident.release_source == "file-name"
    other = raw_btf_identity(str(path), name_hint="4.18.0-305.el8.x86_64.btf")
    assert (other.release, other.flavour) == ("4.18.0-305.el8.x86_64", "default")
    nameless = tmp_path / "blob"
    nameless.write_bytes(path.read_bytes())
    with pytest.raises(InputError, match="release is unknown"):
        kernel_identity(str(nameless))


def test_not_a_kernel(tmp_path):
    with pytest.raises(InputError, match="/bin/ls: not a Linux kernel"):
        kernel_identity("/bin/ls")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        kernel_identity(str(empty))


def test_module_is_not_a_kernel(tmp_path):
    make_rpms("small")
    ko = os.path.join(os.environ.get("DBHIVE_TEST_CACHE", "/var/cache/dbhive-ci"),
                      "rpm-fixtures", "ko", SMALL_KO)
    with pytest.raises(InputError, match="kernel module, not a Linux kernel"):
        kernel_identity(ko)
    # and through a package: identify removes what it extracted
    rpm = make_rpms("small")["small.xz"]
    with pytest.raises(InputError, match="kernel module"):
        identify(rpm, str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("release,package,flavour", [
    ("6.1.0-47-cloud-amd64", "linux-image-6.1.0-47-cloud-amd64-dbg", "cloud-amd64"),
    ("5.15.0-91-generic", "", "generic"),
    ("5.14.21-150500.55.39-default", "", "default"),
    ("6.5.6-300.fc39.x86_64+debug", "", "debug"),
    ("3.10.0-1160.el7.x86_64.debug", "", "debug"),
    ("5.14.0-362.8.1.el9_3.x86_64", "kernel-debuginfo", "default"),
    ("5.14.0-362.8.1.el9_3.x86_64", "kernel-debug-debuginfo", "debug"),
    ("5.14.0-362.el9.aarch64+64k", "", "64k"),
    ("6.18.44-fc-v657", "", "default"),
])
def test_flavour_rule(release, package, flavour):
    assert kernel_flavour(release, package) == flavour


def test_release_from_name():
    assert release_from_name("usr/lib/debug/boot/vmlinux-6.1.0-47-cloud-amd64") == \
        "6.1.0-47-cloud-amd64"
    assert release_from_name("usr/lib/debug/lib/modules/5.14.0-1.el9.x86_64/vmlinux") == \
        "5.14.0-1.el9.x86_64"
    assert release_from_name("ubuntu/20.04/x86_64/5.4.0-1009-aws.btf.tar.xz") == "5.4.0-1009-aws"
    assert release_from_name("/cache/vmlinux-6.1.0-47-cloud-amd64.btf") == "6.1.0-47-cloud-amd64"
    assert release_from_name("/boot/vmlinuz") == ""
    # found by the tracer's tests: the .btf suffix is not part of the release
    assert release_from_name("/var/cache/vmlinux-6.1.0-47-cloud-amd64.btf") == \
        "6.1.0-47-cloud-amd64"


def test_parse_notes_and_sha256(tmp_path):
    # a note area as the kernel lays it out: name and desc padded to 4 bytes
    area = (b"\x04\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00GNU\x00\xab\xcd\x00\x00"
            b"\x06\x00\x00\x00\x01\x00\x00\x00\x00\x01\x00\x00Linux\x00\x00\x00\x07\x00\x00\x00")
    notes = parse_notes(area)
    assert [(n.name, n.type, n.desc) for n in notes] == [(b"GNU", 3, b"\xab\xcd"),
                                                         (b"Linux", 0x100, b"\x07")]
    f = tmp_path / "f"
    f.write_bytes(os.urandom(3 << 20))
    assert file_sha256(str(f)) == hashlib.sha256(f.read_bytes()).hexdigest()


@pytest.mark.parametrize("in_a_process", [True, False])
def test_sha256_later_is_sha256sum(debian_vmlinux, monkeypatch, in_a_process):
    """The build's input hash, made meanwhile in a forked process (or, where forking is not
    safe, a thread), is sha256sum's; a path that cannot be hashed is a one-line error
    either way; close() before the result stops and reaps the child."""
    from dbhive import procs
    from dbhive.errors import DbhiveError
    from dbhive.identity import Sha256Later
    monkeypatch.setattr(procs, "can_fork", lambda: in_a_process)
    later = Sha256Later(debian_vmlinux)
    assert (later._child is not None) == in_a_process
    assert later() == run("sha256sum", debian_vmlinux).split()[0]
    assert later() == run("sha256sum", debian_vmlinux).split()[0]     # asked twice
    later.close()
    with pytest.raises(DbhiveError, match="not a regular file"):
        Sha256Later(os.path.dirname(debian_vmlinux))()
    if in_a_process:
        stopped = Sha256Later(debian_vmlinux)
        pid = stopped._child.pid
        stopped.close()
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)           # killed and reaped: no zombie left
