"""`dbhive fetch` against the real Debian registry (listing bookworm and bullseye cloud -dbg
packages, downloading one), checked against apt's own verified index; and against local
mirrors made of the real signed files, tampered with in each way the chain of trust must
catch (signature, keyring, suite, expiry, index hash, package hash and size).

No registry fact is pinned (a point release drops old kernel ABIs from a suite): what the
index lists is compared with what apt lists (bullseye, which this machine's apt does not
follow, through an apt state directory of its own), and the package downloaded and served
by the local mirrors is the mini-hive's second kernel, chosen from the index at run time."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from dbhive.batch import debian
from scripts.realdata import cache_dir
from tests.support import need_tool
from tests.support.minihive import FETCH_HIVE, dbhive, fetch_second_deb

FLAVOUR_RE = re.compile(r"linux-image-\d+\.\d+\.\d+[-+][^\s]*-cloud-amd64-dbg")


def private_apt(suite: str) -> list:
    """apt options for a state directory of its own following `suite` (main, amd64),
    updated now by apt itself (signatures checked against the archive keyring)."""
    need_tool("apt-get")
    root = cache_dir("batch", f"apt-{suite}")
    for d in ("lists/partial", "cache/archives/partial", "sources"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    with open(os.path.join(root, "sources", f"{suite}.sources"), "w") as fh:
        fh.write(f"Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suite}\n"
                 f"Components: main\nArchitectures: amd64\n"
                 f"Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    opts = []
    for k, v in (("Dir::Etc::SourceList", "/dev/null"),
                 ("Dir::Etc::SourceParts", os.path.join(root, "sources")),
                 ("Dir::State::Lists", os.path.join(root, "lists")),
                 ("Dir::Cache", os.path.join(root, "cache")), ("Acquire::Languages", "none"),
                 ("APT::Architectures", "amd64")):
        opts += ["-o", f"{k}={v}"]
    subprocess.run(["apt-get", *opts, "-q", "update"], check=True, capture_output=True,
                   timeout=600)
    return opts


def apt_index_text(codename: str, opts=()) -> str:
    """apt's own (apt-verified) Packages index of `codename` main amd64."""
    need_tool("apt-get")
    files = subprocess.run(["apt-get", *opts, "indextargets", "--format", "$(FILENAME)",
                            "Created-By: Packages", f"Codename: {codename}",
                            "Component: main", "Architecture: amd64"],
                           capture_output=True, text=True, check=True).stdout.split()
    if not files:
        pytest.fail(f"apt has no index of {codename} main amd64 (the test set-up runs apt-get "
                    f"update)")
    return subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", files[0]],
                          capture_output=True, text=True, check=True).stdout


def apt_cloud_dbg(codename: str, opts=()) -> set:
    """(package, version) of every cloud-amd64 -dbg package in apt's index of `codename`."""
    out = set()
    for para in apt_index_text(codename, opts).split("\n\n"):
        name = re.search(r"^Package: (\S+)$", para, re.M)
        if name and FLAVOUR_RE.fullmatch(name.group(1)):
            out.add((name.group(1), re.search(r"^Version: (\S+)$", para, re.M).group(1)))
    return out


def apt_field(package: str, version: str, field: str) -> str:
    out = subprocess.run(["apt-cache", "show", f"{package}={version}"], capture_output=True,
                         text=True, check=True).stdout
    return re.search(rf"^{field}: (\S+)$", out, re.M).group(1)


def fetch_json(*args, hive=FETCH_HIVE, check=True):
    proc = dbhive("fetch", "debian", *args, "--hive", hive, "--json", check=check)
    return json.loads(proc.stdout) if proc.returncode == 0 else proc


# ----------------------------------------------------------------------------- the registry

def test_lists_the_bookworm_cloud_dbg_packages_as_apt_does():
    listed = fetch_json("--suite", "bookworm", "--flavour", "cloud", "--list")
    ours = {(p["package"], p["version"]) for p in listed}
    assert ours and ours == apt_cloud_dbg("bookworm")
    assert all(p["status"] in ("listed", "present") and p["suite"] == "bookworm" for p in listed)
    for p in listed:
        assert p["sha256"] == apt_field(p["package"], p["version"], "SHA256")
        assert p["size"] == int(apt_field(p["package"], p["version"], "Size"))
        assert p["url"].startswith("http://deb.debian.org/debian/pool/main/l/linux/")


def test_downloads_one_verified_by_hash_and_signature():
    entry = fetch_second_deb()          # the mini-hive's second kernel, fetched by us
    assert entry["status"] in ("downloaded", "present")
    assert entry["file"] == f"x86_64/pack/debian/{os.path.basename(entry['url'])}"
    assert entry["package"] == f"linux-image-{entry['release']}-dbg"
    sha = subprocess.run(["sha256sum", entry["path"]], capture_output=True, text=True,
                         check=True).stdout.split()[0]
    assert sha == entry["sha256"] == apt_field(entry["package"], entry["version"], "SHA256")
    assert os.path.getsize(entry["path"]) == entry["size"]
    # fetching again downloads nothing: the file is there and verifies
    assert fetch_second_deb()["status"] == "present"


def test_bullseye_and_security_suites_and_latest():
    listed = fetch_json("--suite", "bullseye", "--flavour", "cloud", "--list")
    bullseye = {(p["package"], p["version"]) for p in listed}
    assert bullseye and bullseye == apt_cloud_dbg("bullseye", private_apt("bullseye"))
    assert all(p["release"].startswith("5.10.") for p in listed)
    both = fetch_json("--suite", "bookworm", "--suite", "bookworm-security", "--flavour",
                      "cloud", "--list")
    for suite in ("bookworm", "bookworm-security"):     # (either may list none for a while)
        assert {(p["package"], p["version"]) for p in both if p["suite"] == suite} == \
            apt_cloud_dbg(suite) - {(p["package"], p["version"]) for p in both
                                    if p["suite"] != suite}, suite
    assert all(p["url"].startswith("http://deb.debian.org/debian-security/")
               for p in both if p["suite"] == "bookworm-security")
    newest = fetch_json("--suite", "bookworm", "--suite", "bookworm-security", "--flavour",
                        "cloud", "--latest", "2", "--list")
    assert len(newest) == min(2, len(both))
    # dpkg says they are the two newest
    for p in newest:
        for other in both:
            if other["version"] not in (n["version"] for n in newest):
                assert subprocess.run(["dpkg", "--compare-versions", p["version"], "gt",
                                       other["version"]]).returncode == 0


def test_debian_version_order_is_dpkgs():
    versions = ["6.1.170-3", "6.1.176-1", "6.12.107-1~deb12u1", "6.12.107-1", "6.12.107",
                "1:0.1", "6.1.192-3", "6.1.192-3+b1", "6.1.192-3~bpo1", "5.10.223-1",
                "2.0a-1", "2.0-1", "2.0+x-1", "10.0-1", "9.9-1", "1.0~rc1-1", "1.0-1"]
    for a in versions:
        for b in versions:
            ours = debian.compare_versions(a, b)
            dpkg_lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
            dpkg_eq = subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0
            assert (ours < 0, ours == 0) == (dpkg_lt, dpkg_eq), (a, b)


def test_registry_errors_are_one_line():
    proc = fetch_json("--suite", "buster", "--list", check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "dbhive: error: http://deb.debian.org/debian/dists/buster/InRelease: HTTP 404 Not Found")
    proc = fetch_json("--suite", "bookworm", "--latest", "0", check=False)
    assert (proc.returncode, proc.stderr.strip()) == \
        (1, "dbhive: error: --latest must be at least 1")


# ----------------------------------------------------------------------------- local mirrors

@pytest.fixture(scope="module")
def real_files():
    """The real, signed bookworm InRelease and the Packages.xz it names (verified, from the
    registry), plus a real package it lists (the mini-hive's second kernel)."""
    second = fetch_second_deb()
    fetch_json("--suite", "bookworm", "--list")     # fills the verified index cache
    repo = debian.Repository("bookworm", cache=os.path.join(FETCH_HIVE, ".fetch"))
    sha, size = repo.release()["main/binary-amd64/Packages.xz"]
    inrelease = debian.fetch_bytes(repo.url("dists/bookworm/InRelease"), 1 << 24)
    bullseye = debian.fetch_bytes(debian.Repository("bullseye").url(
        "dists/bullseye/InRelease"), 1 << 24)
    return {"inrelease": inrelease, "bullseye": bullseye,
            "packages": os.path.join(FETCH_HIVE, ".fetch", "by-hash", sha),
            "deb": second["path"], "release": second["release"]}


def make_mirror(root, real, inrelease=None, packages=None, deb=None):
    """A file:// mirror of bookworm holding the given files (the real ones by default)."""
    dists = root / "dists" / "bookworm"
    (dists / "main" / "binary-amd64").mkdir(parents=True)
    (dists / "InRelease").write_bytes(inrelease if inrelease is not None else real["inrelease"])
    pk = dists / "main" / "binary-amd64" / "Packages.xz"
    if packages is None:
        os.link(real["packages"], pk)
    else:
        pk.write_bytes(packages)
    pool = root / "pool" / "main" / "l" / "linux"
    pool.mkdir(parents=True)
    target = pool / os.path.basename(real["deb"])
    if deb is None:
        os.link(real["deb"], target)
    else:
        shutil.copyfile(deb, target)
    return f"file://{root}"


def local_fetch(real, mirror, hive, *extra, check=False):
    return dbhive("fetch", "debian", "--suite", "bookworm", "--release", real["release"],
                  "--mirror", mirror, "--hive", str(hive), *extra, check=check)


def test_local_mirror_of_the_real_files_works(real_files, tmp_path):
    mirror = make_mirror(tmp_path / "m", real_files)
    proc = local_fetch(real_files, mirror, tmp_path / "hive", "--json", check=True)
    [entry] = json.loads(proc.stdout)
    assert entry["status"] == "downloaded"
    got = tmp_path / "hive" / entry["file"]
    assert subprocess.run(["cmp", str(got), real_files["deb"]]).returncode == 0


def test_tampered_signed_text_is_refused(real_files, tmp_path):
    text = real_files["inrelease"]
    assert b"Description: Debian 12" in text
    bad = text.replace(b"Description: Debian 12", b"Description: Debian 13", 1)
    proc = local_fetch(real_files, make_mirror(tmp_path / "m", real_files, inrelease=bad),
                       tmp_path / "h")
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("/dists/bookworm/InRelease: a bad signature; refusing "
                                        "its index")
    assert not (tmp_path / "h" / "x86_64").exists()


def test_unsigned_or_foreign_keyring_is_refused(real_files, tmp_path):
    text = real_files["inrelease"].decode()
    body = text.split("\n\n", 1)[1].split("-----BEGIN PGP SIGNATURE-----")[0]
    proc = local_fetch(real_files, make_mirror(tmp_path / "m1", real_files,
                                               inrelease=body.encode()), tmp_path / "h")
    assert proc.returncode == 1 and "no valid signature by a key of" in proc.stderr
    removed = "/usr/share/keyrings/debian-archive-removed-keys.gpg"
    proc = local_fetch(real_files, make_mirror(tmp_path / "m2", real_files), tmp_path / "h",
                       "--keyring", removed)
    assert proc.returncode == 1 and proc.stderr.strip().endswith(
        f"InRelease: no valid signature by a key of {removed}; refusing its index")


def test_another_suites_release_is_refused(real_files, tmp_path):
    """bullseye's real signed InRelease served as bookworm's (a replay)."""
    proc = local_fetch(real_files, make_mirror(tmp_path / "m", real_files,
                                               inrelease=real_files["bullseye"]), tmp_path / "h")
    assert proc.returncode == 1
    assert re.search(r"InRelease: signed for suite '\w+' \('bullseye'\), not 'bookworm'$",
                     proc.stderr.strip()), proc.stderr


def test_tampered_index_is_refused(real_files, tmp_path):
    with open(real_files["packages"], "rb") as fh:
        data = bytearray(fh.read())
    data[len(data) // 2] ^= 0xFF
    proc = local_fetch(real_files, make_mirror(tmp_path / "m", real_files, packages=bytes(data)),
                       tmp_path / "h")
    assert proc.returncode == 1 and proc.stderr.strip().endswith(
        "main/binary-amd64/Packages.xz: does not match the size and sha256 its signed Release "
        f"gives ({len(data)} bytes, {os.path.basename(real_files['packages'])[:16]}...); "
        "refusing it")


def test_tampered_or_short_package_is_refused_and_nothing_written(real_files, tmp_path):
    flipped = tmp_path / "flipped.deb"
    shutil.copyfile(real_files["deb"], flipped)
    middle = os.path.getsize(flipped) // 3
    with open(flipped, "r+b") as fh:
        fh.seek(middle)
        b = fh.read(1)
        fh.seek(middle)
        fh.write(bytes([b[0] ^ 1]))
    hive = tmp_path / "h"
    proc = local_fetch(real_files, make_mirror(tmp_path / "m1", real_files, deb=flipped), hive)
    assert proc.returncode == 1
    assert re.search(r"\.deb: sha256 [0-9a-f]{64} is not the [0-9a-f]{64} its signed index "
                     r"gives; nothing was written$", proc.stderr.strip()), proc.stderr
    pack = hive / "x86_64" / "pack" / "debian"
    assert not pack.exists() or os.listdir(pack) == []
    short = tmp_path / "short.deb"
    with open(real_files["deb"], "rb") as fh, open(short, "wb") as out:
        out.write(fh.read(1_000_000))
    proc = local_fetch(real_files, make_mirror(tmp_path / "m2", real_files, deb=short), hive)
    assert proc.returncode == 1 and proc.stderr.strip().endswith(
        f"1000000 bytes, its index gives {os.path.getsize(real_files['deb'])}; nothing was "
        f"written")
    assert not pack.exists() or os.listdir(pack) == []


def test_expired_release_is_refused(real_files, tmp_path):
    """A Release signed by a key of the keyring given, Valid-Until past: refused; the same
    with Valid-Until ahead: accepted (so the expiry is what is refused)."""
    need_tool("gpg")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
           "--passphrase", ""]
    try:
        subprocess.run([*gpg, "--quick-gen-key", "dbhive test <test@invalid>", "ed25519",
                        "sign", "never"], check=True, capture_output=True)
        keyring = tmp_path / "test.gpg"
        keyring.write_bytes(subprocess.run([*gpg, "--export"], check=True,
                                           capture_output=True).stdout)
        text = real_files["inrelease"].decode()
        body = text.split("\n\n", 1)[1].split("\n-----BEGIN PGP SIGNATURE-----")[0]
        for name, until in (("past", "Sat, 01 Jan 2000 00:00:00 UTC"),
                            ("ahead", "Fri, 01 Jan 2100 00:00:00 UTC")):
            release = body.replace("Acquire-By-Hash:", f"Valid-Until: {until}\nAcquire-By-Hash:",
                                   1)
            signed = subprocess.run([*gpg, "--clearsign"], input=release.encode(), check=True,
                                    capture_output=True).stdout
            proc = local_fetch(real_files, make_mirror(tmp_path / name, real_files,
                                                       inrelease=signed),
                               tmp_path / "h", "--keyring", str(keyring), "--list")
            if name == "past":
                assert proc.returncode == 1 and proc.stderr.strip().endswith(
                    f"InRelease: expired (Valid-Until {until}): a stale or replayed index")
            else:
                assert proc.returncode == 0, proc.stderr
        # the same signature does not satisfy the Debian keyring
        proc = local_fetch(real_files, make_mirror(tmp_path / "debkeys", real_files,
                                                   inrelease=signed), tmp_path / "h", "--list")
        assert proc.returncode == 1 and "no valid signature by a key of" in proc.stderr
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"])


def test_unreachable_mirror_is_one_line(tmp_path):
    proc = local_fetch({"release": "6.1.0-1-cloud-amd64"}, f"file://{tmp_path}/nowhere",
                       tmp_path / "h", "--list")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"dbhive: error: file://{tmp_path}/nowhere/dists/"
                                          f"bookworm/InRelease: cannot fetch")
