"""dbhive.archive on real packages: the Debian debuginfo .deb, RPMs built by Debian's rpmbuild
(scripts/make_rpm_fixture.py), a btfhub-style archive made with tar from this machine's BTF,
and bad inputs made by damaging those real files.

Why most RPM fixtures are small: compressing the 587 MB vmlinux takes minutes with xz, so each
payload compression (xz, zstd, gzip, bzip2) is tested on a small RPM whose stand-in "vmlinux"
is a real .ko from the Debian package; only one compression (zstd) wraps the real vmlinux
(test_identity.py checks that kernel's identity through the RPM path).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile

import pytest

from scripts.realdata import CACHE, DEBIAN_RELEASE, fetch_deb
from tests.support.rpms import KO, MODDIR, make_rpms
from dbhive.archive import (InputError, detect_input, extract_kernel, extract_modules,
                            iter_modules)
from dbhive.identity import file_sha256, identify

COMPRESSIONS = ("xz", "zstd", "gzip", "bzip2")


@pytest.fixture(scope="session")
def rpms() -> dict[str, str]:
    return make_rpms("small")


@pytest.fixture(scope="session")
def ko_files(rpms) -> dict[str, str]:
    """The two real modules the small RPMs were made of (extracted by dpkg-deb | tar)."""
    ko = os.path.join(CACHE, "rpm-fixtures", "ko")
    return {name: os.path.join(ko, os.path.basename(member)) for name, member in KO.items()}


@pytest.fixture(scope="session")
def hostname_deb() -> str:
    """A small real Debian package without a vmlinux."""
    return fetch_deb("hostname")


@pytest.fixture
def workdir(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    return str(d)


def assert_rejected(path: str, workdir: str, *words: str) -> str:
    """extract_kernel must raise InputError naming `path` and saying `words`; nothing left."""
    with pytest.raises(InputError) as info:
        extract_kernel(path, workdir)
    msg = str(info.value)
    assert path in msg and "\n" not in msg
    for w in words:
        assert w in msg, msg
    assert os.listdir(workdir) == []
    return msg


def damaged_copy(src: str, dest: str, keep: int = None, smash_at: int = None) -> str:
    """Copy `src` to `dest`, cut after `keep` bytes and/or overwrite 16 bytes at `smash_at`."""
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        left = keep if keep is not None else os.path.getsize(src)
        while left > 0:
            block = fin.read(min(left, 1 << 22))
            if not block:
                break
            fout.write(block)
            left -= len(block)
    if smash_at is not None:
        with open(dest, "r+b") as fh:
            fh.seek(smash_at)
            old = fh.read(16)
            fh.seek(smash_at)
            fh.write(bytes(b ^ 0x5A for b in old))
    return dest


# ----------------------------------------------------------------------------- the real .deb

@pytest.fixture(scope="session")
def deb_extracted(debian_dbg_deb, tmp_path_factory):
    """Our extraction of the Debian vmlinux, once per session (~8 s)."""
    work = str(tmp_path_factory.mktemp("deb-extract"))
    return extract_kernel(debian_dbg_deb, work), work


@pytest.mark.slow
def test_deb_vmlinux_matches_dpkg_deb(deb_extracted, debian_vmlinux, debian_dbg_deb):
    ex, work = deb_extracted
    assert ex.kind == "deb" and ex.temporary
    assert ex.member == f"usr/lib/debug/boot/vmlinux-{DEBIAN_RELEASE}"
    assert ex.package == os.path.basename(debian_dbg_deb)
    assert ex.package_name == f"linux-image-{DEBIAN_RELEASE}-dbg"
    assert ex.package_version == os.path.basename(debian_dbg_deb).split("_")[1]
    assert os.listdir(work) == [os.path.basename(ex.path)]       # only the vmlinux written
    # oracle: conftest's independent dpkg-deb | tar extraction
    assert file_sha256(ex.path) == file_sha256(debian_vmlinux)


@pytest.mark.slow
def test_deb_modules_listed_like_md5sums(debian_dbg_deb):
    """iter_modules streams the whole package (~16 s); the oracle is the package's md5sums."""
    ctrl = subprocess.run(f"dpkg-deb --ctrl-tarfile {debian_dbg_deb} | tar -xO ./md5sums",
                          shell=True, check=True, capture_output=True, text=True).stdout
    expect = sorted(line.split()[1] for line in ctrl.splitlines() if line.endswith(".ko"))
    got = list(iter_modules(debian_dbg_deb))
    assert sorted(m.member for m in got) == expect
    assert len(got) > 1000
    by_member = {m.member: m.name for m in got}
    assert by_member[KO["crc32c_intel"]] == "crc32c_intel"


@pytest.mark.slow
def test_deb_corrupt_inside_vmlinux(debian_dbg_deb, tmp_path, workdir):
    """Damage the xz stream 30 MB in (inside the vmlinux's compressed bytes)."""
    bad = damaged_copy(debian_dbg_deb, str(tmp_path / "corrupt.deb"), smash_at=30 << 20)
    assert_rejected(bad, workdir, "corrupt")


@pytest.mark.slow
def test_deb_truncated(debian_dbg_deb, tmp_path, workdir):
    bad = damaged_copy(debian_dbg_deb, str(tmp_path / "trunc.deb"), keep=100 << 20)
    assert_rejected(bad, workdir, "truncated")


# ----------------------------------------------------------------------------- RPM

@pytest.mark.parametrize("comp", COMPRESSIONS)
def test_rpm_each_compression(rpms, ko_files, workdir, comp):
    path = rpms[f"small.{comp}"]
    # oracle for the fixture itself: rpm says the payload really is compressed that way
    got = subprocess.run(["rpm", "-qp", "--qf", "%{PAYLOADCOMPRESSOR}", path], check=True,
                         capture_output=True, text=True).stdout
    assert got == comp
    assert detect_input(path) == "rpm"
    ex = extract_kernel(path, workdir)
    assert ex.kind == "rpm" and ex.member == f"{MODDIR}/vmlinux"
    assert (ex.package_name, ex.package_version) == ("kernel-debuginfo", f"6.1.0-47.small.{comp}")
    assert file_sha256(ex.path) == file_sha256(ko_files["aegis128_aesni"])
    assert os.listdir(workdir) == [os.path.basename(ex.path)]
    ex.cleanup()
    assert os.listdir(workdir) == []


@pytest.mark.parametrize("label", ["symlink.back", "symlink.chain"])
def test_rpm_symlinked_vmlinux(rpms, ko_files, workdir, label):
    """back: the link's target came earlier in the stream (second pass); chain: a link to a
    later link to an earlier file."""
    ex = extract_kernel(rpms[label], workdir)
    assert ex.member == "usr/lib/debug/.build-id/4f/61d8f6.debug"
    assert file_sha256(ex.path) == file_sha256(ko_files["crc32c_intel"])
    assert os.listdir(workdir) == [os.path.basename(ex.path)]


def test_rpm_hardlinked_vmlinux(rpms, ko_files, workdir):
    """cpio hard links: the kernel member is the empty first link, data comes later."""
    ex = extract_kernel(rpms["hardlink.kernel"], workdir)
    assert ex.member == f"usr/lib/debug/boot/vmlinux-{DEBIAN_RELEASE}"
    assert file_sha256(ex.path) == file_sha256(ko_files["aegis128_aesni"])


def test_rpm_hardlinked_module(rpms, ko_files, workdir):
    mods = extract_modules(rpms["hardlink.module"], workdir)
    assert [(m.name, m.member) for m in mods] == [("aegis128_aesni", KO["aegis128_aesni"])]
    assert file_sha256(mods[0].path) == file_sha256(ko_files["aegis128_aesni"])


def test_rpm_bad_links(rpms, workdir):
    assert_rejected(rpms["symlink.dangling"], workdir, "link to", "vmlinux-missing",
                    "not a file")
    assert_rejected(rpms["symlink.escape"], workdir, "unsafe link", "escapes")


def test_rpm_modules(rpms, ko_files, workdir):
    path = rpms["small.xz"].replace("kernel-debuginfo", "kernel-modules-debuginfo")
    listing = subprocess.run(["bsdtar", "-tf", path], check=True, capture_output=True,
                             text=True).stdout.split()
    got = list(iter_modules(path))
    assert sorted(m.member for m in got) == sorted(p[2:] for p in listing if p.endswith(".ko"))
    assert {m.name for m in got} == set(KO)
    assert_rejected(path, workdir, "no vmlinux")
    # select by either spelling of the name; only that one is written
    mods = extract_modules(path, workdir, ["crc32c-intel"])
    assert [m.name for m in mods] == ["crc32c_intel"]
    assert file_sha256(mods[0].path) == file_sha256(ko_files["crc32c_intel"])
    assert os.listdir(workdir) == [os.path.basename(mods[0].path)]


@pytest.mark.parametrize("comp", COMPRESSIONS)
def test_rpm_truncated(rpms, tmp_path, workdir, comp):
    src = rpms[f"small.{comp}"]
    bad = damaged_copy(src, str(tmp_path / f"trunc.{comp}.rpm"), keep=os.path.getsize(src) // 2)
    assert_rejected(bad, workdir, "truncated RPM")


@pytest.mark.parametrize("comp", COMPRESSIONS)
@pytest.mark.parametrize("where", [0.5, 0.75, 0.98])
def test_rpm_corrupt_payload(rpms, tmp_path, workdir, comp, where):
    """Damaged compressed bytes are caught by the decompressor or, where the format has no
    check of its own (gzip's CRC sits at the very end, zstd frames may carry none), by the
    RPM header's sha256 of the file."""
    src = rpms[f"small.{comp}"]
    bad = damaged_copy(src, str(tmp_path / f"bad.{comp}.rpm"),
                       smash_at=int(os.path.getsize(src) * where) - 16)
    msg = assert_rejected(bad, workdir)
    assert any(w in msg for w in ("corrupt", "unreadable", "truncated")), msg


def test_progress_bar(rpms, workdir, capsys):
    extract_kernel(rpms["small.zstd"], workdir, progress=True).cleanup()
    err = capsys.readouterr().err
    assert "kernel-debuginfo-6.1.0-47.small.zstd" in err and "B/s" in err


# ----------------------------------------------------------------------------- btfhub archives

@pytest.fixture(scope="session")
def btf_archive(running_btf, tmp_path_factory):
    """A btfhub-shaped `x86_64/<release>.btf.tar.xz` made by tar from this machine's BTF."""
    release = os.uname().release
    tmp_path = tmp_path_factory.mktemp("btfhub")
    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(running_btf, src / f"{release}.btf")
    arch_dir = tmp_path / "x86_64"
    arch_dir.mkdir()
    out = arch_dir / f"{release}.btf.tar.xz"
    subprocess.run(["tar", "-cJf", str(out), "-C", str(src), f"{release}.btf"], check=True)
    return str(out)


def test_btf_archive(btf_archive, running_btf, workdir):
    assert detect_input(btf_archive) == "btf-archive"
    ex = extract_kernel(btf_archive, workdir)
    assert ex.kind == "btf-archive" and ex.member == f"{os.uname().release}.btf"
    assert file_sha256(ex.path) == file_sha256(running_btf)
    assert detect_input(ex.path) == "raw-btf"
    ex.cleanup()
    ex, ident = identify(btf_archive, workdir)       # release from the name, arch from the dir
    assert (ident.release, ident.arch) == (os.uname().release, "x86_64")
    assert ident.btf_sha256 == file_sha256(running_btf) and ident.source == "raw-btf"


def test_btf_archive_truncated(btf_archive, tmp_path, workdir):
    bad = damaged_copy(btf_archive, str(tmp_path / "t.btf.tar.xz"),
                       keep=os.path.getsize(btf_archive) * 2 // 3)
    assert_rejected(bad, workdir, "truncated")


def test_btf_archive_corrupt(btf_archive, tmp_path, workdir):
    bad = damaged_copy(btf_archive, str(tmp_path / "c.btf.tar.xz"),
                       smash_at=os.path.getsize(btf_archive) // 2)
    assert_rejected(bad, workdir, "corrupt")


def test_btf_archive_without_btf(tmp_path, workdir):
    (tmp_path / "README").write_text("no BTF here\n")
    out = str(tmp_path / "x.tar.gz")
    subprocess.run(["tar", "-czf", out, "-C", str(tmp_path), "README"], check=True)
    assert_rejected(out, workdir, "no .btf file")


def test_path_traversal_member(running_btf, tmp_path, workdir):
    """A member named ../evil.btf: the archive is refused, nothing is written anywhere."""
    out = str(tmp_path / "evil.btf.tar")
    with tarfile.open(out, "w") as tar:
        tar.add(running_btf, arcname="../evil.btf")
    assert_rejected(out, workdir, "unsafe member path", "../evil.btf")
    assert not os.path.exists(os.path.join(os.path.dirname(workdir), "evil.btf"))


# ----------------------------------------------------------------------------- other bad input

def test_deb_without_vmlinux(hostname_deb, workdir):
    assert detect_input(hostname_deb) == "deb"
    assert_rejected(hostname_deb, workdir, "no vmlinux", "Debian package")


def test_deb_small_truncated_and_corrupt(hostname_deb, tmp_path, workdir):
    size = os.path.getsize(hostname_deb)
    trunc = damaged_copy(hostname_deb, str(tmp_path / "t.deb"), keep=size - 500)
    assert_rejected(trunc, workdir, "truncated")
    bad = damaged_copy(hostname_deb, str(tmp_path / "c.deb"), smash_at=size - 3000)
    assert_rejected(bad, workdir, "corrupt")


def _small_kernel_deb(tmp_path, ko: str, md5: str, name: str) -> str:
    """A .deb made by dpkg-deb whose vmlinux member is a real module (an ELF file) and whose
    md5sums says `md5` for it."""
    root = tmp_path / name
    member = f"usr/lib/debug/boot/vmlinux-{DEBIAN_RELEASE}"
    (root / os.path.dirname(member)).mkdir(parents=True)
    shutil.copyfile(ko, root / member)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: t <t@t>\n"
        f"Description: test\n")
    (root / "DEBIAN" / "md5sums").write_text(f"{md5}  {member}\n")
    out = str(tmp_path / f"{name}.deb")
    subprocess.run(["dpkg-deb", "-Zxz", "--root-owner-group", "--build", str(root), out],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def test_deb_member_checked_against_md5sums(ko_files, tmp_path, workdir):
    import hashlib
    ko = next(iter(ko_files.values()))
    with open(ko, "rb") as fh:
        md5 = hashlib.md5(fh.read()).hexdigest()
    good = _small_kernel_deb(tmp_path, ko, md5, "good")
    ex = extract_kernel(good, workdir)
    assert file_sha256(ex.path) == file_sha256(ko) and ex.package_name == "good"
    ex.cleanup()
    wrong = md5[:-1] + ("0" if md5[-1] != "0" else "1")
    bad = _small_kernel_deb(tmp_path, ko, wrong, "bad")
    msg = assert_rejected(bad, workdir, "corrupt Debian package", f"md5 of member usr/lib/"
                          f"debug/boot/vmlinux-{DEBIAN_RELEASE} is {md5}", wrong)
    assert "the package says" in msg


def test_elf_and_raw_btf_are_used_in_place(running_btf, workdir):
    ex = extract_kernel("/bin/ls", workdir)      # whether it is a kernel: identity's job
    assert (ex.kind, ex.path, ex.temporary) == ("elf", "/bin/ls", False)
    ex.cleanup()
    assert os.path.exists("/bin/ls")
    ex = extract_kernel(running_btf, workdir)
    assert (ex.kind, ex.path, ex.member) == ("raw-btf", running_btf, None)


def test_unusable_paths(tmp_path, workdir):
    empty = tmp_path / "empty.rpm"
    empty.write_bytes(b"")
    assert_rejected(str(empty), workdir, "empty file")
    assert_rejected(str(tmp_path), workdir, "is a directory")
    assert_rejected(str(tmp_path / "missing.deb"), workdir, "cannot open")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert_rejected(str(text), workdir, "unsupported input format")
