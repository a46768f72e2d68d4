"""Fuzz targets: each takes bytes and feeds them to one reader the way a user's file would
arrive.  A `DbhiveError` is the reader refusing bad input (fine); any other exception is a
bug — the fuzzer (bench/fuzz.py, atheris) reports it as a crash.

Each target has seeds derived from real files (`seeds(name)`), small enough for many
executions per second.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile

from dbhive.errors import DbhiveError

SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _scratch_file(data: bytes, suffix: str = "") -> str:
    fd, path = tempfile.mkstemp(prefix="dbhive-fuzz-", suffix=suffix, dir=SCRATCH)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


# --- BTF ---------------------------------------------------------------------------------

def btf(data: bytes) -> None:
    """The reader and the writer's walks, each C loop held to its Python reference: the C
    parser (btf/_cbtf.c) must make the Python parser's graph or refuse what it refuses, and
    the spelling loop and the surftrace rows' loops (dbhive/_cmodel.c: flattened members,
    types, files and functions) likewise."""
    from dbhive import model as M, surftrace
    from dbhive.btf import reader
    try:
        layout = reader._layout(data, "fuzz")
    except DbhiveError:
        return
    c = reader._c_parse(data, layout) if reader._c is not None else None
    try:
        with M.gc_paused():
            g = reader._parser(data, "fuzz", None).parse()
    except DbhiveError:
        assert c is None, "the C parser read what the Python parser refuses"
        return
    if reader._c is not None:
        assert c is not None, "the C parser refused what the Python parser reads"
        assert (c.types, c.functions, c.variables, c.datasecs, c.decl_tags) == \
            (g.types, g.functions, g.variables, g.datasecs, g.decl_tags), "C != Python graph"
    spell = g.spelling_cache()
    try:
        want = [spell(tid) for tid in range(len(g.types))]
    except DbhiveError:
        want = None
    try:
        for tid in range(len(g.types)):
            g.sizeof(tid)
    except DbhiveError:
        pass
    if M._c is not None:
        got = M._c.spell_all(g.types)
        assert got == want, "C != Python spellings"
    try:
        rows = surftrace.table_rows(g, spell)        # the surftrace walks, in Python
    except DbhiveError:
        rows = None
    if M._c is not None and want is not None:
        try:
            c_rows = surftrace.table_rows(g, spell, None, want)
        except DbhiveError:
            c_rows = None
        assert c_rows == rows, "C != Python surftrace rows"


# --- DWARF -------------------------------------------------------------------------------

def dwarf(data: bytes) -> None:
    from dbhive.dwarf import read_dwarf
    path = _scratch_file(data)
    try:
        read_dwarf(path, jobs=1)
    except DbhiveError:
        pass
    finally:
        os.unlink(path)


# --- packages ----------------------------------------------------------------------------

def archive(data: bytes) -> None:
    from dbhive.archive import extract_kernel, iter_modules
    path = _scratch_file(data)
    work = tempfile.mkdtemp(prefix="dbhive-fuzz-", dir=SCRATCH)
    try:
        try:
            ex = extract_kernel(path, work)
            ex.cleanup()
        except DbhiveError:
            pass
        try:
            list(iter_modules(path))
        except DbhiveError:
            pass
        left = os.listdir(work)
        assert not left, f"extraction left {left} behind"
    finally:
        os.unlink(path)
        os.rmdir(work)


# --- Go ----------------------------------------------------------------------------------

class _GoBinary:
    """A real Go binary whose pclntab header region and build-info region are overwritten
    by the fuzz input (the rest of the file stays real)."""

    def __init__(self, path: str):
        from dbhive.elf import ElfFile
        with open(path, "rb") as fh:
            self.image = bytearray(fh.read())
        with ElfFile(path) as elf:
            pcln = elf.section(".gopclntab")
            info = elf.section(".go.buildinfo")
        self.regions = [(pcln.offset, min(pcln.size, 4096)), (info.offset, min(info.size, 512))]

    def with_input(self, data: bytes) -> bytes:
        img = bytearray(self.image)
        pos = 0
        for off, size in self.regions:
            chunk = data[pos:pos + size]
            img[off:off + len(chunk)] = chunk
            pos += size
        return bytes(img)


_go = None


def go(data: bytes) -> None:
    from resolver.golang import analyze_go_binary
    global _go
    if _go is None:
        _go = _GoBinary(os.environ["DBHIVE_FUZZ_GO_BINARY"])
    path = _scratch_file(_go.with_input(data))
    try:
        analyze_go_binary(path)
    except DbhiveError:
        pass
    finally:
        os.unlink(path)


# --- the server's request parsing --------------------------------------------------------

_kernels = None


def server_request(data: bytes) -> None:
    from resolver import server
    global _kernels
    if _kernels is None:
        _kernels = server.Kernels(db=os.environ["DBHIVE_FUZZ_DB"])
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return                       # the HTTP layer answers 400 before this point
    if isinstance(body, list) and 0 < len(body) <= server.MAX_ITEMS:
        server.lbc_many(_kernels, body)
    for path in ("/api/offset", "/api/struct", "/api/func", "/api/expr", "/api/kernels"):
        try:
            server.api_call(_kernels, path, body)
        except DbhiveError:
            pass


TARGETS = {"btf": btf, "dwarf": dwarf, "archive": archive, "go": go,
           "server": server_request}


# --- seeds -------------------------------------------------------------------------------

def seeds(name: str, out_dir: str) -> list:
    """Write the seed inputs of a target into `out_dir`; returns their paths.  Needs the
    environment a target needs (see bench/fuzz.py)."""
    os.makedirs(out_dir, exist_ok=True)
    blobs = []
    if name in ("btf", "dwarf"):
        from scripts import make_dwarf_fixtures
        fx = make_dwarf_fixtures.build()
        picks = ("user-dwarf4", "user-dwarf5", "user-types4", "user-clang5")
        if name == "dwarf":
            blobs = [open(fx[k], "rb").read() for k in picks if k in fx]
        else:                     # pahole's BTF of the same real objects
            for k in picks:
                if k not in fx:
                    continue
                out = os.path.join(out_dir, f"{k}.btf-src")
                subprocess.run(["pahole", "--btf_encode_detached", out, fx[k]], check=True,
                               capture_output=True)
                blobs.append(open(out, "rb").read())
                os.unlink(out)
    elif name == "archive":
        from scripts.realdata import fetch_deb
        from tests.support.rpms import make_rpms
        blobs.append(open(fetch_deb("hostname"), "rb").read())
        small = make_rpms("small")
        blobs += [open(small[k], "rb").read() for k in sorted(small)[:2]]
    elif name == "go":
        from dbhive.elf import ElfFile
        path = os.environ["DBHIVE_FUZZ_GO_BINARY"]
        with ElfFile(path) as elf:
            pcln = elf.section(".gopclntab")
            info = elf.section(".go.buildinfo")
            blobs.append(bytes(elf.section_bytes(pcln)[:4096]).ljust(4096, b"\0")
                         + bytes(elf.section_bytes(info)[:512]))
    elif name == "server":
        rel = os.uname().release
        blobs = [json.dumps(x).encode() for x in (
            [{"cmd": "struct", "ver": rel, "struct": "struct file"}],
            [{"cmd": "struct", "struct": "struct %sock%"}, {"cmd": "type", "type": "u64"}],
            [{"cmd": "func", "func": "vfs_%", "ret": "ssize_t"}, {"cmd": "btf"}],
            {"paths": ["task_struct.files", "sock->sk_wq"], "name": "file",
             "probes": ["p vfs_read n=%0->f_path.dentry->d_name.name"], "compat": False})]
    paths = []
    for i, b in enumerate(blobs):
        p = os.path.join(out_dir, f"seed-{i}")
        with open(p, "wb") as fh:
            fh.write(b)
        paths.append(p)
    return paths
