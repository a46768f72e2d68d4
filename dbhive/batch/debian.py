"""Debian-style repositories: list and download kernel debuginfo packages, verified.

Chain of trust, as apt has it:
  1. `dists/<suite>/InRelease` is checked with `gpgv` against the archive keyring
     (`/usr/share/keyrings/debian-archive-keyring.gpg`): at least one good signature by a key
     of the keyring and no bad one.  Only the text gpgv says is signed is read (its
     `--output`), never the file as downloaded.  Its Suite or Codename must be the suite
     asked for, and a Valid-Until in the past is refused.
  2. `main/binary-<arch>/Packages.xz` (else `.gz`, else plain) must have the size and
     SHA256 that signed text gives.  Verified index files are kept by hash in the cache
     directory and reused while the signed Release still names them.
  3. A package must have the Size and SHA256 its Packages stanza gives; it is written to a
     temp file beside its destination and renamed only once both match.

Kernel debuginfo packages are `linux-image-<release>-dbg`, release `<abi>-<flavour>`:
`6.1.0-47-cloud-amd64` (ABI 6.1.0-47, flavour cloud-amd64), `6.12.107+deb12-cloud-amd64`.
Meta-packages (`linux-image-cloud-amd64-dbg`, `linux-image-6.12-cloud-amd64-dbg`) name no
release and are not kernels.  Suites ending in `-security` live on the security archive.

The only network access of the project, and only when `dbhive fetch` is run.
"""
from __future__ import annotations

import bz2
import datetime
import email.utils
import fnmatch
import hashlib
import lzma
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional

from .. import output
from ..errors import FetchError, InputError

MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DISTRO = "debian"                       # the hive's <distro> directory for these packages
# Debian architecture -> the kernel's `uname -m` (the hive's <arch> directory)
UNAME_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "ppc64el": "ppc64le", "s390x": "s390x",
              "i386": "i686", "armhf": "armv7l"}

MAX_RELEASE_BYTES = 16 << 20
MAX_INDEX_BYTES = 256 << 20             # a compressed Packages file
MAX_INDEX_TEXT = 1 << 30                # ... and decompressed
TIMEOUT_S = 60
_BLOCK = 1 << 20

_DBG = re.compile(r"linux-image-(?P<release>(?P<abi>\d+\.\d+\.\d+(?:-\d+|\+deb\d+(?:u\d+)?))"
                  r"-(?P<flavour>[a-z0-9][a-z0-9.-]*))-dbg")
_INDEX_NAMES = (("Packages.xz", lambda: lzma.LZMADecompressor()),
                ("Packages.gz", lambda: zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)),
                ("Packages.bz2", lambda: bz2.BZ2Decompressor()),
                ("Packages", None))


def _decompress(data: bytes, make, limit: int) -> bytes:
    """`data` decompressed, at most `limit` bytes (more is an error, not a memory blow-up)."""
    if make is None:
        out = data
    else:
        d = make()
        out = d.decompress(data, limit + 1)
        if len(out) <= limit and not d.eof:
            raise ValueError("the compressed stream ends early")
    if len(out) > limit:
        raise ValueError(f"decompresses to more than {limit} bytes")
    return out


@dataclass
class KernelPackage:
    package: str        # linux-image-6.1.0-47-cloud-amd64-dbg
    version: str        # 6.1.170-3
    release: str        # 6.1.0-47-cloud-amd64
    abi: str
    flavour: str        # cloud-amd64
    arch: str           # Debian's: amd64
    suite: str
    url: str
    size: int
    sha256: str
    file: str = ""      # where it is / goes, relative to the hive
    status: str = "listed"    # listed | present | downloaded

    def as_json(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- network

def _open(url: str):
    try:
        return urllib.request.urlopen(url, timeout=TIMEOUT_S)    # noqa: S310 (asked for)
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise FetchError(f"{url}: cannot fetch ({e.reason})") from None
    except (TimeoutError, ConnectionError) as e:
        raise FetchError(f"{url}: cannot fetch ({e})") from None


def fetch_bytes(url: str, max_bytes: int) -> bytes:
    """The body at `url`, at most `max_bytes` (more is an error)."""
    with _open(url) as resp:
        try:
            data = resp.read(max_bytes + 1)
        except (TimeoutError, ConnectionError) as e:
            raise FetchError(f"{url}: cannot fetch ({e})") from None
    if len(data) > max_bytes:
        raise FetchError(f"{url}: larger than {max_bytes} bytes")
    return data


def fetch_verified(url: str, dest: str, size: int, sha256: str,
                   progress: Optional[Callable[[int], None]] = None) -> None:
    """Download `url` to `dest` (temp file + rename) only if it has exactly `size` bytes
    and this sha256; FetchError (and nothing written) otherwise."""
    digest, got = hashlib.sha256(), 0
    with output.atomic_path(dest, mode=0o644) as tmp, open(tmp, "wb") as out, \
            _open(url) as resp:
        while True:
            try:
                block = resp.read(min(_BLOCK, size + 1 - got))
            except (TimeoutError, ConnectionError) as e:
                raise FetchError(f"{url}: download broken off ({e})") from None
            if not block:
                break
            got += len(block)
            if got > size:
                raise FetchError(f"{url}: more than the {size} bytes its index gives; "
                                 f"nothing was written")
            digest.update(block)
            out.write(block)
            if progress:
                progress(len(block))
        if got != size:
            raise FetchError(f"{url}: {got} bytes, its index gives {size}; nothing was written")
        if digest.hexdigest() != sha256:
            raise FetchError(f"{url}: sha256 {digest.hexdigest()} is not the {sha256} its "
                             f"signed index gives; nothing was written")


# ----------------------------------------------------------------------------- signatures

def verify_inrelease(data: bytes, keyring: str, what: str) -> bytes:
    """The text of an InRelease file that gpgv finds signed by a key of `keyring`."""
    if not os.path.isfile(keyring):
        raise FetchError(f"{keyring}: no such keyring (apt-get install debian-archive-keyring)")
    with tempfile.TemporaryDirectory(prefix="dbhive-gpgv-") as home:
        signed = os.path.join(home, "InRelease")
        text = os.path.join(home, "Release")
        with open(signed, "wb") as fh:
            fh.write(data)
        try:
            proc = subprocess.run(["gpgv", "--status-fd", "1", "--keyring", keyring,
                                   "--output", text, signed],
                                  capture_output=True, env={**os.environ, "GNUPGHOME": home})
        except FileNotFoundError:
            raise FetchError("gpgv is not installed (apt-get install gpgv)") from None
        status = proc.stdout.decode("utf-8", "replace").splitlines()
        good = [ln for ln in status if ln.startswith("[GNUPG:] VALIDSIG ")] and \
            [ln for ln in status if ln.startswith("[GNUPG:] GOODSIG ")]
        bad = [ln for ln in status if ln.startswith("[GNUPG:] BADSIG ")]
        if bad or not good or not os.path.isfile(text):
            why = "a bad signature" if bad else "no valid signature by a key of " + keyring
            raise FetchError(f"{what}: {why}; refusing its index")
        with open(text, "rb") as fh:
            return fh.read(MAX_RELEASE_BYTES + 1)


# ----------------------------------------------------------------------------- deb822

def parse_stanzas(text: str, wanted: Optional[Callable[[str], bool]] = None) -> list[dict]:
    """Paragraphs of a deb822 file (Release, Packages) as dicts; `wanted(first_line)`
    filters paragraphs before they are parsed (a Packages file has 60,000)."""
    out = []
    for para in text.split("\n\n"):
        para = para.strip("\n")
        if not para or (wanted and not wanted(para.split("\n", 1)[0])):
            continue
        fields, key = {}, None
        for line in para.split("\n"):
            if line[:1] in (" ", "\t"):
                if key is not None:
                    fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip()
                fields[key] = value.strip()
        out.append(fields)
    return out


def release_files(fields: dict) -> dict:
    """{path: (sha256, size)} from a Release file's SHA256 field."""
    out = {}
    for line in fields.get("SHA256", "").split("\n"):
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            out[parts[2]] = (parts[0].lower(), int(parts[1]))
    return out


# ----------------------------------------------------------------------------- versions

def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's comparison of an upstream version or revision: non-digit runs character by
    character (~ first, then the end, letters, other characters), digit runs as numbers."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ca = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            cb = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ca != cb:
                return ca - cb
            i += 1
            j += 1
        na = nb = ""
        while i < len(a) and a[i].isdigit():
            na += a[i]
            i += 1
        while j < len(b) and b[j].isdigit():
            nb += b[j]
            j += 1
        if int(na or 0) != int(nb or 0):
            return int(na or 0) - int(nb or 0)
    return 0


def compare_versions(a: str, b: str) -> int:
    """<0, 0, >0 as Debian version a sorts before, with, after b (`dpkg --compare-versions`)."""
    def split(v):
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
        return int(epoch or 0), upstream, revision
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


# ----------------------------------------------------------------------------- repository

class Repository:
    """One suite of a Debian-style archive, its index files verified as the module says."""

    def __init__(self, suite: str, mirror: Optional[str] = None, keyring: str = KEYRING,
                 cache: Optional[str] = None):
        self.suite = suite
        default = SECURITY_MIRROR if suite.endswith("-security") else MIRROR
        self.mirror = (mirror or default).rstrip("/")
        self.keyring = keyring
        self.cache = cache
        self._files: Optional[dict] = None

    def url(self, path: str) -> str:
        return f"{self.mirror}/{path}"

    def release(self) -> dict:
        """{path: (sha256, size)} of the suite's signed Release."""
        if self._files is None:
            url = self.url(f"dists/{self.suite}/InRelease")
            text = verify_inrelease(fetch_bytes(url, MAX_RELEASE_BYTES), self.keyring, url)
            fields = (parse_stanzas(text.decode("utf-8", "replace")) or [{}])[0]
            names = {fields.get("Suite"), fields.get("Codename")}
            if self.suite not in names:
                raise FetchError(f"{url}: signed for suite {fields.get('Suite')!r} "
                                 f"({fields.get('Codename')!r}), not {self.suite!r}")
            _check_valid_until(fields, url)
            self._files = release_files(fields)
        return self._files

    def packages(self, component: str, arch: str,
                 wanted: Optional[Callable[[str], bool]] = None) -> list[dict]:
        files = self.release()
        for name, make in _INDEX_NAMES:
            path = f"{component}/binary-{arch}/{name}"
            if path in files:
                sha, size = files[path]
                data = self._index_file(f"dists/{self.suite}/{path}", sha, size)
                try:
                    text = _decompress(data, make, MAX_INDEX_TEXT)
                except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError) as e:
                    raise FetchError(f"{self.url(path)}: verified, but cannot be "
                                     f"decompressed ({e})") from None
                return parse_stanzas(text.decode("utf-8", "replace"), wanted)
        raise FetchError(f"{self.url(f'dists/{self.suite}/InRelease')}: lists no "
                         f"{component}/binary-{arch}/Packages index")

    def _index_file(self, path: str, sha: str, size: int) -> bytes:
        if size > MAX_INDEX_BYTES:
            raise FetchError(f"{self.url(path)}: its Release gives {size} bytes, more than "
                             f"{MAX_INDEX_BYTES}")
        cached = os.path.join(self.cache, "by-hash", sha) if self.cache else None
        if cached and os.path.isfile(cached):
            with open(cached, "rb") as fh:
                data = fh.read(size + 1)
            if len(data) == size and hashlib.sha256(data).hexdigest() == sha:
                return data
        data = fetch_bytes(self.url(path), size)
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            raise FetchError(f"{self.url(path)}: does not match the size and sha256 its signed "
                             f"Release gives ({size} bytes, {sha[:16]}...); refusing it")
        if cached:
            output.write_bytes(cached, data, mode=0o644)
        return data


def _check_valid_until(fields: dict, url: str) -> None:
    raw = fields.get("Valid-Until")
    if not raw:
        return
    try:
        until = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        raise FetchError(f"{url}: unreadable Valid-Until {raw!r}") from None
    if until.tzinfo is None:
        until = until.replace(tzinfo=datetime.timezone.utc)
    if until < datetime.datetime.now(datetime.timezone.utc):
        raise FetchError(f"{url}: expired (Valid-Until {raw}): a stale or replayed index")


def kernel_packages(repo: Repository, arch: str, components: Iterable[str] = ("main",),
                    flavours: Iterable[str] = (), releases: Iterable[str] = ()) -> list:
    """The kernel debuginfo packages of a suite (see the module doc), filtered by flavour
    (`cloud` or `cloud-amd64`) and release globs."""
    flavours, releases = list(flavours), list(releases)
    found = []
    for component in components:
        stanzas = repo.packages(component, arch,
                                wanted=lambda first: first.startswith("Package: linux-image-")
                                and first.endswith("-dbg"))
        for st in stanzas:
            m = _DBG.fullmatch(st.get("Package", ""))
            if not m or st.get("Architecture") not in (arch, None):
                continue
            flavour = m.group("flavour")
            if flavours and not any(flavour in (f, f"{f}-{arch}") for f in flavours):
                continue
            if releases and not any(fnmatch.fnmatchcase(m.group("release"), g)
                                    for g in releases):
                continue
            try:
                size = int(st["Size"])
                sha, filename = st["SHA256"].lower(), st["Filename"]
            except (KeyError, ValueError):
                raise FetchError(f"{repo.url(f'dists/{repo.suite}')}: stanza of "
                                 f"{st.get('Package')} without Size/SHA256/Filename") from None
            if filename.startswith("/") or ".." in filename.split("/"):
                raise FetchError(f"{repo.suite}: {st['Package']} has a Filename outside the "
                                 f"archive: {filename!r}")
            found.append(KernelPackage(st["Package"], st.get("Version", ""), m.group("release"),
                                       m.group("abi"), flavour, arch, repo.suite,
                                       repo.url(filename), size, sha))
    return found


def select(pkgs: list, latest: Optional[int] = None) -> list:
    """One entry per package and version (the first suite listing it wins); with `latest`,
    only the newest N versions of each flavour.  Sorted by flavour, then newest first."""
    import functools
    seen, unique = set(), []
    for p in pkgs:
        if (p.package, p.version) not in seen:
            seen.add((p.package, p.version))
            unique.append(p)
    newest_first = functools.cmp_to_key(lambda a, b: compare_versions(b.version, a.version))
    unique.sort(key=lambda p: p.package)
    unique.sort(key=newest_first)
    unique.sort(key=lambda p: p.flavour)
    if latest is not None:
        kept, per = [], {}
        for p in unique:
            per[p.flavour] = per.get(p.flavour, 0) + 1
            if per[p.flavour] <= latest:
                kept.append(p)
        unique = kept
    return unique


def destination(hive: str, pkg: KernelPackage) -> str:
    """Where a package goes in the hive: <hive>/<uname arch>/pack/debian/<its file name>."""
    from .. import hive as hivemod
    name = os.path.basename(pkg.url)
    try:
        name = hivemod.safe_component(name, "package file name")
    except ValueError as e:
        raise InputError(str(e)) from None
    arch = UNAME_ARCH.get(pkg.arch, pkg.arch)
    return os.path.join(hive, arch, "pack", DISTRO, name)


def file_matches(path: str, size: int, sha256: str) -> bool:
    """Whether `path` is already the package (size first: cheap)."""
    try:
        if os.path.getsize(path) != size:
            return False
    except OSError:
        return False
    from ..identity import file_sha256
    return file_sha256(path) == sha256
