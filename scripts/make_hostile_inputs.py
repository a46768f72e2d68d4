"""Hostile inputs for tests/test_hostile.py, each derived by this script from a real file:
the running kernel's BTF (records patched into cycles, headers lying about sizes), real ELF
files (/bin/ls, libcrypto) with damaged headers or padded to 10 GB (sparse), a real DB
with its tables damaged, and a .deb whose kernel member inflates to 1 GiB of zeros.

    python -m scripts.make_hostile_inputs [OUT_DIR]     # prints name<TAB>path per input

Made once into $DBHIVE_TEST_CACHE/hostile-<version> (atomically: built in a temp dir, then
renamed); sparse files take no disk space.
"""
from __future__ import annotations

import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile

from dbhive.btf import kinds as K
from scripts.realdata import CACHE, RUNNING_BTF

VERSION = "3"
ARCH_DIR = "x86_64"          # raw BTF is filed under its arch, as btfhub does
LS = "/bin/ls"
LIBCRYPTO = "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"


def garbage(n: int) -> bytes:
    """n random bytes, the same on every run (a failure is reproducible)."""
    return random.Random(16).randbytes(n)


# --- BTF ---------------------------------------------------------------------------------

class Btf:
    """A raw BTF blob split into its header and type records (offsets of each record)."""

    def __init__(self, data: bytes):
        self.data = bytearray(data)
        (_magic, _ver, _fl, self.hdr_len, self.type_off, self.type_len, self.str_off,
         self.str_len) = struct.unpack_from("<HBBIIIII", data, 0)
        self.records = [None]            # btf id -> (offset of the record, kind, vlen)
        pos = self.hdr_len + self.type_off
        end = pos + self.type_len
        while pos < end:
            _name, info, _st = struct.unpack_from("<III", data, pos)
            kind, vlen = (info >> K.KIND_SHIFT) & K.KIND_MASK, info & K.VLEN_MASK
            self.records.append((pos, kind, vlen))
            pos += K.COMMON_SIZE + _extra(kind, vlen)

    def ids(self, kind: int, min_vlen: int = 0) -> list:
        return [i for i, r in enumerate(self.records) if r and r[1] == kind and r[2] >= min_vlen]

    def set_ref(self, tid: int, ref: int) -> None:
        """The size_type word (the referenced type for ptr/typedef/qualifiers)."""
        struct.pack_into("<I", self.data, self.records[tid][0] + 8, ref)

    def set_array_elem(self, tid: int, elem: int) -> None:
        struct.pack_into("<I", self.data, self.records[tid][0] + K.COMMON_SIZE, elem)

    def set_member_type(self, tid: int, index: int, member_type: int) -> None:
        pos = self.records[tid][0] + K.COMMON_SIZE + index * K.MEMBER_SIZE + 4
        struct.pack_into("<I", self.data, pos, member_type)

    def set_header(self, **fields) -> None:
        names = ("hdr_len", "type_off", "type_len", "str_off", "str_len")
        for i, n in enumerate(names):
            if n in fields:
                struct.pack_into("<I", self.data, 4 + 4 * i, fields[n])


def _extra(kind: int, vlen: int) -> int:
    fixed = {K.INT: 4, K.ARRAY: K.ARRAY_SIZE, K.VAR: 4, K.DECL_TAG: 4}.get(kind, 0)
    per = {K.STRUCT: K.MEMBER_SIZE, K.UNION: K.MEMBER_SIZE, K.ENUM: K.ENUM_SIZE,
           K.ENUM64: K.ENUM64_SIZE, K.FUNC_PROTO: K.PARAM_SIZE,
           K.DATASEC: K.VARSECINFO_SIZE}.get(kind, 0)
    return fixed + per * vlen


def btf_cases(real: bytes) -> dict:
    """name -> bytes, each the real BTF with one crafted defect."""
    out = {}

    def patched(fn):
        b = Btf(real)
        fn(b)
        return bytes(b.data)

    typedefs, consts = Btf(real).ids(K.TYPEDEF), Btf(real).ids(K.CONST)
    volatiles, ptrs = Btf(real).ids(K.VOLATILE), Btf(real).ids(K.PTR)
    arrays, structs = Btf(real).ids(K.ARRAY), Btf(real).ids(K.STRUCT, min_vlen=1)
    out["typedef-self"] = patched(lambda b: b.set_ref(typedefs[0], typedefs[0]))
    out["typedef-pair"] = patched(lambda b: (b.set_ref(typedefs[0], typedefs[1]),
                                             b.set_ref(typedefs[1], typedefs[0])))
    ring = typedefs[:10]
    out["typedef-ring-10"] = patched(lambda b: [b.set_ref(ring[i], ring[(i + 1) % 10])
                                                for i in range(10)])
    out["const-self"] = patched(lambda b: b.set_ref(consts[0], consts[0]))
    out["ptr-self"] = patched(lambda b: b.set_ref(ptrs[0], ptrs[0]))
    out["array-self"] = patched(lambda b: b.set_array_elem(arrays[0], arrays[0]))
    out["mixed-cycle"] = patched(lambda b: (b.set_ref(consts[0], volatiles[0]),
                                            b.set_ref(volatiles[0], typedefs[0]),
                                            b.set_ref(typedefs[0], consts[0])))
    out["struct-embeds-self"] = patched(lambda b: b.set_member_type(structs[0], 0, structs[0]))
    # 300 structs of one member each, each embedding the next: no cycle, but nested deeper
    # than the flattening of the surftrace tables follows
    single = [i for i, r in enumerate(Btf(real).records) if r and r[1] == K.STRUCT and r[2] == 1]
    out["nested-300"] = patched(lambda b: [b.set_member_type(single[i], 0, single[i + 1])
                                           for i in range(300)])
    out["dangling-ref"] = patched(lambda b: b.set_ref(ptrs[0], 10 ** 7))
    out["empty-types"] = patched(lambda b: b.set_header(type_len=0, str_off=0))
    # a tiny BTF: one struct that claims 65535 members and has none
    hdr = struct.pack("<HBBIIIII", K.MAGIC, K.VERSION, 0, K.HEADER_SIZE, 0, K.COMMON_SIZE,
                      K.COMMON_SIZE, 4)
    rec = struct.pack("<III", 1, K.info(K.STRUCT, 0xFFFF), 8)
    out["vlen-65535"] = hdr + rec + b"\0ab\0"
    return out


# --- ELF ---------------------------------------------------------------------------------

def elf_cases(out_dir: str) -> dict:
    paths = {}
    ls = open(LS, "rb").read()
    # e_phnum = 0xffff: a program header table running far past the file
    p = os.path.join(out_dir, "elf-phnum-ffff")
    with open(p, "wb") as fh:
        fh.write(ls[:56] + struct.pack("<H", 0xFFFF) + ls[58:])
    paths["elf-phnum-ffff"] = p
    # a real ELF header followed by random bytes
    p = os.path.join(out_dir, "elf-random")
    with open(p, "wb") as fh:
        fh.write(ls[:64] + garbage(1 << 20))
    paths["elf-random"] = p
    # a real library padded to 10 GiB (sparse), with and without section headers
    for name, strip_sections in (("elf-sparse-10g", False), ("elf-sparse-10g-noshdr", True)):
        p = os.path.join(out_dir, name)
        data = bytearray(open(LIBCRYPTO, "rb").read())
        if strip_sections:
            struct.pack_into("<Q", data, 0x28, 0)          # e_shoff
            struct.pack_into("<HHH", data, 0x3A, 0, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
        with open(p, "wb") as fh:
            fh.write(data)
            fh.truncate(10 << 30)
        paths[name] = p
    return paths


# --- DB ----------------------------------------------------------------------------------

def db_cases(good_db: str, out_dir: str) -> dict:
    paths = {}

    def copy(name):
        p = os.path.join(out_dir, name)
        shutil.copy(good_db, p)
        return p

    p = copy("db-no-type-tables.db")
    conn = sqlite3.connect(p)
    for t in ("kt_types", "kt_members", "kt_enumerators", "kt_params", "kt_functions"):
        conn.execute(f"DROP TABLE {t}")                     # names are constants here
    conn.commit()
    conn.close()
    paths["db-no-type-tables"] = p
    p = copy("db-corrupt.db")
    size = os.path.getsize(p)
    with open(p, "r+b") as fh:                              # garbage over the middle pages
        fh.seek(size // 3)
        fh.write(garbage(min(1 << 20, size // 3)))
    paths["db-corrupt"] = p
    # garbage over every page of the type and member tables (their b-trees as SQLite's
    # dbstat lists them): the file opens, its meta table reads, and any type lookup or
    # whole-table scan meets the damage
    p = copy("db-damaged-type-tables.db")
    conn = sqlite3.connect(p)
    pages = [n for (n,) in conn.execute("SELECT pageno FROM dbstat WHERE name IN "
                                        "('kt_types', 'kt_members')")]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(p, "r+b") as fh:
        for n in pages:
            fh.seek((n - 1) * page_size)
            fh.write(garbage(page_size))
    paths["db-damaged-type-tables"] = p
    p = copy("db-ref-cycle.db")
    conn = sqlite3.connect(p)
    # atomic_t (the type of mm_struct.mm_users) now names itself
    conn.execute("UPDATE kt_types SET ref = id WHERE kind = 'typedef' AND name = 'atomic_t'")
    # and struct file's first member's pointer target is the pointer itself
    conn.execute("UPDATE kt_types SET ref = id WHERE id = (SELECT m.member_type FROM "
                 "kt_members m JOIN kt_types t ON t.id = m.type_id JOIN kt_types p ON "
                 "p.id = m.member_type WHERE t.name = 'file' AND t.kind = 'struct' AND "
                 "p.kind = 'ptr' ORDER BY m.idx LIMIT 1)")
    conn.commit()
    conn.close()
    paths["db-ref-cycle"] = p
    return paths


# --- packages ----------------------------------------------------------------------------

def deb_bomb(out_dir: str, size: int = 1 << 30) -> str:
    """A real .deb (dpkg-deb --build) whose vmlinux member is `size` bytes of zeros."""
    out = os.path.join(out_dir, "deb-bomb.deb")
    with tempfile.TemporaryDirectory(dir=out_dir) as root:
        os.makedirs(os.path.join(root, "DEBIAN"))
        with open(os.path.join(root, "DEBIAN", "control"), "w") as fh:
            fh.write("Package: linux-image-6.1.0-bomb-dbg\nVersion: 1\nArchitecture: amd64\n"
                     "Maintainer: dbhive tests <tests@localhost>\nDescription: zeros\n")
        d = os.path.join(root, "usr", "lib", "debug", "boot")
        os.makedirs(d)
        with open(os.path.join(d, "vmlinux-6.1.0-bomb"), "wb") as fh:
            fh.truncate(size)
        subprocess.run(["dpkg-deb", "-Zxz", "-z1", "--root-owner-group", "--build", root, out],
                       check=True, capture_output=True)
    return out


def build(out_dir: str = "") -> dict:
    """Make every input (once); {name: path}."""
    out_dir = out_dir or os.path.join(CACHE, f"hostile-{VERSION}")
    if os.path.isdir(out_dir):
        return _listing(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-hostile-", dir=os.path.dirname(out_dir))
    try:
        btf_dir = os.path.join(tmp, ARCH_DIR)
        os.makedirs(btf_dir)
        with open(RUNNING_BTF, "rb") as fh:
            real = fh.read()
        for name, data in btf_cases(real).items():
            with open(os.path.join(btf_dir, f"6.18-hostile-{name}.btf"), "wb") as fh:
                fh.write(data)
        p = os.path.join(btf_dir, "6.18-hostile-padded-2g.btf")
        with open(p, "wb") as fh:
            fh.write(real)
            fh.truncate(2 << 30)
        shutil.copy(RUNNING_BTF, os.path.join(tmp, "6.18-no-arch-dir.btf"))
        elf_cases(tmp)
        from dbhive.build import build as build_db
        good_db = os.path.join(tmp, "good.db")
        build_db(RUNNING_BTF, out=good_db)
        db_cases(good_db, tmp)
        deb_bomb(tmp)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _listing(out_dir)


def _listing(out_dir: str) -> dict:
    out = {}
    for dirpath, _dirs, files in os.walk(out_dir):
        for f in files:
            name = f.replace("6.18-hostile-", "btf-").rsplit(".", 1)[0] if f.endswith(
                (".btf", ".db", ".deb")) else f
            out[name] = os.path.join(dirpath, f)
    return out


if __name__ == "__main__":
    for k, v in sorted(build(sys.argv[1] if len(sys.argv) > 1 else "").items()):
        print(f"{k}\t{v}")
