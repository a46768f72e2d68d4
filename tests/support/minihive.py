"""The real mini-hive of the batch tests, and helpers to compare hives.

    <hive>/x86_64/pack/debian/linux-image-6.1.0-47-cloud-amd64-dbg_6.1.170-3_amd64.deb  (real)
    <hive>/x86_64/pack/debian/linux-image-<another>-cloud-amd64-dbg_<v>_amd64.deb  (real, chosen
                         from bookworm's signed index and downloaded by `dbhive fetch` itself)
    <hive>/x86_64/pack/debian/linux-image-6.1.0-99-cloud-amd64-dbg_6.1.999-1_amd64.deb  (corrupt:
                                                       the first 5 MB of the real 6.1.0-47 one)
    <hive>/x86_64/pack/fedora/kernel-debuginfo-6.1.0-47.big.zstd.x86_64.rpm   (real RPM made by
                                   rpmbuild around the 6.1.0-47 vmlinux: the same kernel again)
    <hive>/x86_64/pack/btf/<uname -r>.btf                       (this machine's raw BTF)
    <hive>/x86_64/pack/btfhub/debian/12/x86_64/6.1.0-47-cloud-amd64.btf.tar.xz  (btfhub-shaped,
                                   made with tar from the Debian kernel's .BTF)

Big inputs are linked from the shared cache ($DBHIVE_TEST_CACHE), never copied.

The second kernel is not pinned: a Debian point release drops old ABIs from bookworm, so it
is whichever other cloud -dbg package the index lists now, the one already in the cache as
long as the index still lists it (no new 281 MB download), else the newest.  When the index
cannot be read (offline), the cached one is used: it was verified against the signed index
when it was fetched.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass

from dbhive import schema
from scripts.realdata import CACHE, DEBIAN_RELEASE, cache_dir

DBHIVE = os.path.join(os.path.dirname(sys.executable), "dbhive")
FETCH_HIVE = os.path.join(CACHE, "batch", "fetch-hive")
SECOND_CHOICE = os.path.join(FETCH_HIVE, ".second-kernel.json")     # the last choice
CORRUPT_NAME = "linux-image-6.1.0-99-cloud-amd64-dbg_6.1.999-1_amd64.deb"
CORRUPT_BYTES = 5_000_000
BTFHUB_DIR = "btfhub/debian/12/x86_64"
BTFHUB_RELEASE = "6.1.0-47-cloud-amd64"


def dbhive(*args, env=None, check=True, timeout=3600) -> subprocess.CompletedProcess:
    proc = subprocess.run([DBHIVE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"dbhive {' '.join(args)} exited {proc.returncode}: "
                             f"{proc.stderr[-3000:]}")
    return proc


def fetch_second_deb() -> dict:
    """The mini-hive's second kernel (see the module doc): a bookworm cloud-amd64 -dbg
    package other than DEBIAN_RELEASE, fetched from the real Debian registry by `dbhive
    fetch` into a cached hive (a later call finds it present, verified again).  Returns
    fetch's JSON entry, with `path` added."""
    listing = dbhive("fetch", "debian", "--suite", "bookworm", "--flavour", "cloud",
                     "--list", "--hive", FETCH_HIVE, "--json", check=False)
    if listing.returncode != 0:
        return _cached_choice(listing.stderr)
    others = [p for p in json.loads(listing.stdout)
              if p["flavour"] == "cloud-amd64" and p["release"] != DEBIAN_RELEASE]
    if not others:
        raise AssertionError(f"bookworm lists no cloud-amd64 -dbg package besides "
                             f"{DEBIAN_RELEASE}")
    # after 6.1.0-47 in package order (the kill -9 test stops the batch between the two)
    others = [p for p in others if p["release"] > DEBIAN_RELEASE] or others
    present = [p for p in others if p["status"] == "present"]
    pick = (present or others)[0]           # newest first (fetch's order)
    proc = dbhive("fetch", "debian", "--suite", "bookworm", "--flavour", "cloud",
                  "--release", pick["release"], "--hive", FETCH_HIVE, "--json")
    entries = [e for e in json.loads(proc.stdout) if e["version"] == pick["version"]]
    if len(entries) != 1:
        raise AssertionError(f"expected one {pick['release']} package, fetch gave {entries}")
    entry = entries[0]
    entry["path"] = os.path.join(FETCH_HIVE, entry["file"])
    tmp = f"{SECOND_CHOICE}.part-{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(entry, fh)
    os.replace(tmp, SECOND_CHOICE)
    return entry


def cached_second_deb():
    """The second kernel chosen last time, if its package is still in the cache (it was
    verified against the signed index when fetched), else None.  No network."""
    try:
        with open(SECOND_CHOICE) as fh:
            entry = json.load(fh)
        if os.path.getsize(entry["path"]) != entry["size"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    entry["status"] = "present"
    return entry


def _cached_choice(why: str) -> dict:
    entry = cached_second_deb()
    if entry is None:
        raise AssertionError(f"cannot list bookworm's packages and none is cached: "
                             f"{why.strip()[-500:]}")
    return entry


def btfhub_archive(debian_btf: str) -> str:
    """A btfhub-shaped <release>.btf.tar.xz of the Debian kernel's BTF (cached)."""
    out = os.path.join(cache_dir("batch"), f"{BTFHUB_RELEASE}.btf.tar.xz")
    if not os.path.exists(out):
        src = os.path.join(cache_dir("batch"), f"btfhub-src-{os.getpid()}")
        os.makedirs(src, exist_ok=True)
        shutil.copy(debian_btf, os.path.join(src, f"{BTFHUB_RELEASE}.btf"))
        tmp = f"{out}.part-{os.getpid()}"
        subprocess.run(["tar", "-C", src, "-cJf", tmp, f"{BTFHUB_RELEASE}.btf"], check=True)
        shutil.rmtree(src)
        os.replace(tmp, out)
    return out


@dataclass
class Inputs:
    deb47: str
    deb2: str           # the second Debian kernel (fetch_second_deb)
    release2: str       # its release, e.g. 6.1.0-50-cloud-amd64
    rpm: str
    raw_btf: str        # this machine's BTF (copied into each hive under its release)
    btfhub: str

    def layout(self) -> dict:
        """{path in the hive: source} of the mini-hive (the corrupt package is made)."""
        release = os.uname().release
        return {
            f"x86_64/pack/debian/{os.path.basename(self.deb47)}": self.deb47,
            f"x86_64/pack/debian/{os.path.basename(self.deb2)}": self.deb2,
            f"x86_64/pack/debian/{CORRUPT_NAME}": None,
            f"x86_64/pack/fedora/{os.path.basename(self.rpm)}": self.rpm,
            f"x86_64/pack/btf/{release}.btf": self.raw_btf,
            f"x86_64/pack/{BTFHUB_DIR}/{BTFHUB_RELEASE}.btf.tar.xz": self.btfhub,
        }


def make_pack(hive: str, inputs: Inputs, how: str = "symlink", only=None) -> list[str]:
    """Lay out the mini-hive's pack/ in `hive` (`how`: symlink, or hardlink for a hive a
    container mounts: a link out of the mount would not resolve there).  `only`: a subset
    of the layout's paths.  Returns the package paths (relative to the hive)."""
    made = []
    for rel, src in inputs.layout().items():
        if only is not None and rel not in only:
            continue
        dest = os.path.join(hive, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if src is None:
            with open(inputs.deb47, "rb") as fh, open(dest, "wb") as out:
                out.write(fh.read(CORRUPT_BYTES))
        elif src == inputs.raw_btf:
            shutil.copyfile(src, dest)          # small; /sys files cannot be linked
        elif how == "symlink":
            os.symlink(src, dest)
        else:
            try:
                os.link(src, dest)
            except OSError:
                shutil.copyfile(src, dest)
        made.append(rel)
    return sorted(made)


# Functions (and the file names they refer to) are compared as sets: the DWARF reader lists
# them in another order with 2 workers than with 1 (same rows; types keep their ids).
_SET_QUERIES = {
    "kt_functions": "SELECT name, proto, static, file, line, module FROM kt_functions",
    "files": "SELECT file FROM files",
    "funs": "SELECT u.func, u.args, u.ret, u.line, f.file, u.module FROM funs u "
            "LEFT JOIN files f ON f.id = u.fid",
}


def db_digest(path: str) -> str:
    """sha256 of every row of every type table of a DB (meta aside: it holds the build
    time and source file): equal for two DBs of the same kernel."""
    digest = hashlib.sha256()
    conn = sqlite3.connect(schema.ro_uri(path), uri=True)
    try:
        for table in schema.TABLES:
            if table is schema.META:
                continue
            query = _SET_QUERIES.get(table.name, f"SELECT * FROM {table.name}")
            width = len(conn.execute(query + " LIMIT 0").description)
            order = ", ".join(str(i + 1) for i in range(width))
            digest.update(table.name.encode())
            for row in conn.execute(f"{query} ORDER BY {order}"):
                digest.update(repr(row).encode())
    finally:
        conn.close()
    return digest.hexdigest()


def db_files(hive: str) -> list[str]:
    out = []
    for d, _, files in os.walk(hive):
        out += [os.path.relpath(os.path.join(d, f), hive) for f in files
                if f.startswith("info-") and f.endswith(".db")]
    return sorted(out)


def normalized_index(hive: str) -> dict:
    """`dbhive index` of a hive reduced to what one run and N shards must agree on:
    per package its status and kernel, per built DB its content digest; an alias by what
    it is an alias of (which DB file holds the copy is the aliases-aside part)."""
    man = json.loads(dbhive("index", "--hive", hive, "--json").stdout)
    out = {}
    for e in man["entries"]:
        key = e.get("package") or "db:" + e["db"]
        if e["status"] == "alias":
            out[key] = ("alias", e.get("alias_of"), e.get("build_id"))
        elif e["status"] == "built":
            out[key] = ("built", e["db"], e.get("build_id"), e["sha256"],
                        db_digest(os.path.join(hive, e["db"])))
        else:
            out[key] = (e["status"], e.get("reason", ""))
    return out



def merge_hives(dest: str, *hives: str) -> None:
    """Put the outputs of several hives together, as shards on a shared volume leave them
    (db/, btf/, state/; pack/ from the first)."""
    for h in hives:
        for d, _, files in os.walk(h):
            rel = os.path.relpath(d, h)
            os.makedirs(os.path.join(dest, rel), exist_ok=True)
            for f in files:
                src, out = os.path.join(d, f), os.path.join(dest, rel, f)
                if os.path.lexists(out):
                    continue
                if os.path.islink(src):
                    os.symlink(os.readlink(src), out)
                else:
                    os.link(src, out)
