"""DWARF reader on the real Debian 6.1 vmlinux (587 MB, DWARF 5, 2170 units), read once per
session: every struct/union pahole prints, the DB built from the DWARF against the DB built
from the same file's .BTF section, and functions against pyelftools on sample units."""
from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from dbhive import model as M
from dbhive import store
from dbhive.btf import read_btf
from dbhive.dwarf import read_dwarf
from dbhive.dwarf.reader import Reader
from tests.support import need_tool
from tests.support.pahole_compare import compare_with_pahole
from tests.support.pahole_oracle import pahole_layouts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def debian_dwarf_graph(debian_vmlinux) -> M.TypeGraph:
    return read_dwarf(debian_vmlinux, jobs=2)


@pytest.fixture(scope="session")
def debian_dwarf_graph_one_process(debian_vmlinux) -> M.TypeGraph:
    return read_dwarf(debian_vmlinux, jobs=1)


def test_two_processes_read_the_graph_one_process_reads(debian_dwarf_graph,
                                                        debian_dwarf_graph_one_process):
    """The vmlinux read by one process and by two (debian_dwarf_graph): the same types and
    the same functions in the same order (so the same DB, ids included).  A function met
    inlined in the first share and with code in the second once came out at the second's
    place."""
    one = debian_dwarf_graph_one_process
    assert one.types == debian_dwarf_graph.types
    assert one.functions == debian_dwarf_graph.functions


@pytest.mark.parametrize("own_weight", [0.2, 5.0])
def test_pieces_taken_from_a_slower_share_change_nothing(debian_dwarf_graph_one_process,
                                                         debian_vmlinux, own_weight,
                                                         monkeypatch):
    """Shares far from equal (this process's a sixth of the worker's, or five times it):
    the one done first reads pieces of the other's (dwarf/parallel.py), merged in unit
    order into the graph one process reads, types and functions in the same order.  Each
    piece is one merge more than the worker's share alone."""
    from dbhive.dwarf import keys, parallel
    monkeypatch.setattr(parallel, "_OWN_SHARE_WEIGHT", own_weight)
    merges = []
    merge = keys.KeyTable.merge
    monkeypatch.setattr(keys.KeyTable, "merge",
                        lambda self, k, o: merges.append(len(k)) or merge(self, k, o))
    two = read_dwarf(debian_vmlinux, jobs=2)
    assert len(merges) >= 2, "no piece was read by the other process"
    one = debian_dwarf_graph_one_process
    assert one.types == two.types
    assert one.functions == two.functions


def test_pieces_of_a_dwz_file_change_nothing(debian_vmlinux_dwz, monkeypatch):
    """The same after dwz: a piece read after a share does not reuse the partial units'
    records the share read (they hold the ids of the share's table, where the scan jumped
    over definitions it had: an IndexError in the merge)."""
    from dbhive.dwarf import parallel
    monkeypatch.setattr(parallel, "_OWN_SHARE_WEIGHT", 0.2)
    one = read_dwarf(debian_vmlinux_dwz, jobs=1)
    two = read_dwarf(debian_vmlinux_dwz, jobs=2)
    assert one.types == two.types
    assert one.functions == two.functions


def test_a_two_process_graph_holds_the_models_own_kinds(debian_dwarf_graph):
    """The types of a graph read by two processes hold model.py's kind strings themselves
    (keys.finalize), not the equal strings the worker's keys became when they were sent:
    the DB writer's C loops (_cmodel.c) tell kinds by identity, and left such a graph to
    the Python code."""
    own = {id(k) for k in M.KINDS}
    assert all(id(t.kind) in own for t in debian_dwarf_graph.types)
    fwd = [t for t in debian_dwarf_graph.types if t.kind == M.FWD]
    assert fwd and all(id(t.encoding) in own for t in fwd)
    assert M._c is None or M._c.spell_all(debian_dwarf_graph.types) is not None


@pytest.fixture(scope="session")
def debian_vmlinux_dwz(debian_vmlinux) -> str:
    """The same vmlinux after `dwz` (single-file mode: 17k partial units, imported units,
    DW_FORM_ref_addr), the way dwz-using distros ship kernel debuginfo.  Made once."""
    need_tool("dwz")
    out = debian_vmlinux + ".dwz"
    if not os.path.exists(out):
        tmp = out + ".part"
        shutil.copy(debian_vmlinux, tmp)
        # dwz's default DIE limits are below a kernel's 14M DIEs
        subprocess.run(["dwz", "-L", "100000000", "-l", "100000000", tmp], check=True,
                       capture_output=True)
        os.replace(tmp, out)
    return out


def test_every_pahole_layout_equal(debian_dwarf_graph, debian_vmlinux):
    result = compare_with_pahole(debian_dwarf_graph, pahole_layouts(debian_vmlinux, "dwarf"))
    assert result["problems"] == []
    assert result["checked"] >= 7400


def test_same_name_layouts_carry_their_unit(debian_dwarf_graph):
    g = debian_dwarf_graph
    by_name = collections.defaultdict(list)
    for _tid, t in g.named(M.COMPOSITE):
        if t.size is not None:
            by_name[(t.kind, t.name)].append(t)
    multi = {k: v for k, v in by_name.items() if len(v) > 1}
    assert multi, "the 6.1 vmlinux has same-name structs with different layouts"
    for layouts in multi.values():
        assert all(t.origin and t.origin.endswith((".c", ".S")) for t in layouts)
        assert len({(t.size, tuple((m.name, m.bit_offset, m.bit_size) for m in t.members),
                     tuple(m.type for m in t.members)) for t in layouts}) == len(layouts)


def test_dwz_vmlinux_reads_like_the_original(debian_dwarf_graph, debian_vmlinux_dwz,
                                              debian_vmlinux):
    with open(debian_vmlinux_dwz, "rb") as fh:
        units = [cu.get_top_DIE().tag for cu in
                 ELFFile(fh).get_dwarf_info(relocate_dwarf_sections=False).iter_CUs()
                 if cu.cu_offset < 200_000]
    assert "DW_TAG_partial_unit" in units           # dwz really rewrote it
    g = read_dwarf(debian_vmlinux_dwz)
    result = compare_with_pahole(g, pahole_layouts(debian_vmlinux, "dwarf"))
    assert result["problems"] == [] and result["checked"] >= 7400
    orig = debian_dwarf_graph
    assert sorted(g.type_name(i) + " " + t.kind for i, t in enumerate(g.types)) == \
        sorted(orig.type_name(i) + " " + t.kind for i, t in enumerate(orig.types))
    def funcs(x):
        return sorted((f.name, x.type_name(f.proto), f.static, f.file, f.line)
                      for f in x.functions)
    assert funcs(g) == funcs(orig)
    # types dwz moved to partial units are tagged with a compile unit that imports them
    assert all(t.origin for _, t in g.named(M.COMPOSITE))


# ---------------------------------------------------------------------------
# DWARF DB vs BTF DB of the same vmlinux

_DIMS = re.compile(r"(?:\[\d*\])+")


def _flat_dims(text: str) -> str:
    """pahole's BTF encoder flattens multi-dimensional arrays (`[4][2][5]` -> `[40]`)."""
    def prod(m):
        dims = [int(x) if x else 0 for x in re.findall(r"\[(\d*)\]", m.group(0))]
        if len(dims) == 1:
            return m.group(0)
        n = 1
        for d in dims:
            n *= d
        return f"[{n}]"
    return _DIMS.sub(prod, text)


def _index(g: M.TypeGraph) -> dict:
    out = collections.defaultdict(set)
    spell = g.type_name
    for tid, t in enumerate(g.types):
        k = t.kind
        if not t.name:
            continue
        if k in M.COMPOSITE:
            sig = (t.size, tuple((m.name, _flat_dims(spell(m.type)), m.bit_offset, m.bit_size)
                                 for m in t.members or ()))
        elif k == M.ENUM:
            sig = (t.size, t.signed, tuple(t.enumerators or ()))
        elif k == M.TYPEDEF:
            sig = _flat_dims(spell(t.ref))
        elif k == M.INT:
            sig = (t.size, t.signed, t.encoding)
        elif k in (M.FLOAT, M.FWD):
            sig = (t.size, t.encoding)
        else:
            continue
        out[(k, t.name)].add(sig)
    return out


def _functions(g: M.TypeGraph) -> dict:
    out = collections.defaultdict(set)
    for f in g.functions:
        p = g.types[f.proto]
        out[f.name].add((g.type_name(p.ref if p.ref is not None else 0),
                         tuple((x.name, g.type_name(x.type)) for x in p.params), p.variadic))
    return out


def test_dwarf_db_equals_btf_db(debian_dwarf_graph, debian_vmlinux_btf, tmp_path):
    with open(debian_vmlinux_btf, "rb") as fh:
        btf_graph = read_btf(fh.read(), debian_vmlinux_btf)
    dwarf_db, btf_db = str(tmp_path / "d.db"), str(tmp_path / "b.db")
    store.write_db(debian_dwarf_graph, {"release": "dwarf"}, dwarf_db)
    store.write_db(btf_graph, {"release": "btf"}, btf_db)
    gd, gb = store.load_graph(dwarf_db), store.load_graph(btf_db)
    assert gd.source == "dwarf" and gb.source == "btf"
    ours, theirs = _index(gd), _index(gb)

    # Legitimate difference 1: pahole 1.24's BTF encoder never sets BTF_INT_CHAR, so the
    # char types are plain SIGNED / unsigned ints in BTF.
    for key in [k for k in theirs if k[0] == M.INT]:
        (size, signed, enc), = theirs.pop(key)
        (osize, osigned, oenc), = ours.pop(key)
        assert (osize, osigned) == (size, signed), key
        assert oenc == enc or (oenc == "char" and enc == ("signed" if signed else "unsigned")), key
    # Legitimate difference 2: an enum that is only ever declared is a forward declaration
    # in DWARF; BTF 1.24 has no enum FWD and encodes it as an ENUM with no enumerators.
    declared_only = sorted(name for (k, name), sigs in theirs.items()
                           if k == M.ENUM and all(not s[2] for s in sigs))
    for name in declared_only:
        assert ours.pop((M.FWD, name)) == {(None, "enum")}, name
        del theirs[(M.ENUM, name)]
    assert declared_only == ["nf_nat_manip_type", "x86_intercept_stage"]
    # Legitimate difference 3 (in _index): multi-dimensional arrays are flattened in BTF.
    # Everything else -- every struct, union, enum, typedef, float and forward declaration,
    # with all their layouts -- is the same.
    assert ours == theirs

    # Functions.  Legitimate difference 4: pahole 1.24 writes every BTF FUNC with static
    # linkage, so linkage is not compared.  BTF keeps one prototype per name taken from
    # the first DWARF subprogram pahole meets; ours has every distinct definition, which
    # must include BTF's.
    assert all(f.static for f in gb.functions)
    fd, fb = _functions(gd), _functions(gb)
    missing = {name: sigs - fd.get(name, set()) for name, sigs in fb.items()
               if not sigs <= fd.get(name, set())}
    assert missing == {}
    assert len(fd) >= len(fb) > 40000


# ---------------------------------------------------------------------------
# functions: file, line and linkage against pyelftools' own DIE walk

SAMPLE_UNITS = ("kernel/fork.c", "fs/open.c", "net/ipv4/tcp_output.c")


def _pyelftools_functions(path: str, names) -> set:
    # where the units are (only their unit DIEs decoded); pyelftools then reads them
    reader = Reader(path)
    offsets = [u.offset for u in reader.units if reader.unit_name(u) in names]
    assert len(offsets) == len(names)
    out = set()
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        dwarf = elf.get_dwarf_info(relocate_dwarf_sections=False)
        for cu_offset in offsets:
            cu = dwarf.get_CU_at(cu_offset)
            top = cu.get_top_DIE()
            lp = dwarf.line_program_for_CU(cu)
            comp_dir = top.attributes["DW_AT_comp_dir"].value.decode()
            dirs = [d.decode() for d in lp.header.include_directory]
            files = []
            for fe in lp.header.file_entry:
                d = dirs[fe.dir_index] if fe.dir_index < len(dirs) else ""
                p = os.path.join(d, fe.name.decode())
                if p.startswith(comp_dir.rstrip("/") + "/"):
                    p = p[len(comp_dir.rstrip("/")) + 1:]
                files.append(os.path.normpath(p))
            for die in top.iter_children():
                if die.tag != "DW_TAG_subprogram" or "DW_AT_low_pc" not in die.attributes:
                    continue
                decl = die
                if "DW_AT_abstract_origin" in die.attributes:
                    decl = die.get_DIE_from_attribute("DW_AT_abstract_origin")
                a = decl.attributes
                out.add((a["DW_AT_name"].value.decode(), files[a["DW_AT_decl_file"].value],
                         a["DW_AT_decl_line"].value, "DW_AT_external" not in a))
    return out


def test_functions_match_pyelftools_on_sample_units(debian_dwarf_graph, debian_vmlinux):
    want = _pyelftools_functions(debian_vmlinux, SAMPLE_UNITS)
    assert len(want) > 150
    ours = {(f.name, f.file, f.line, f.static) for f in debian_dwarf_graph.functions}
    assert want - ours == set()
    assert all(f.module == "vm" for f in debian_dwarf_graph.functions)


_INTERRUPTIBLE_READ = r'''
import signal, sys
def interrupt(signum, frame):       # as dbhive batch's build processes have it
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, interrupt)
from dbhive.dwarf import read_dwarf
try:
    read_dwarf(sys.argv[1], jobs=2)
except KeyboardInterrupt:
    sys.exit(130)
'''


def test_an_interrupted_two_process_read_ends_at_once(debian_vmlinux):
    """SIGTERM while the worker has keys in flight that nobody reads any more (this process
    stopped meanwhile, so the pipe fills): the read stops within seconds and leaves no
    worker.  A worker that had inherited a SIGTERM handler raising KeyboardInterrupt
    waited at exit for the queue, and this process for it, forever."""
    import signal
    import sys
    import time
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTIBLE_READ, debian_vmlinux])
    try:
        deadline = time.monotonic() + 60
        workers: list = []
        while not workers and time.monotonic() < deadline and proc.poll() is None:
            out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
            workers = [int(p) for p in out.stdout.split()]
            time.sleep(0.05)
        assert workers, "no DWARF worker started"
        time.sleep(0.3)
        proc.send_signal(signal.SIGSTOP)        # the worker goes on sending keys
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=20) == 130
        time.sleep(0.2)
        assert not [w for w in workers if os.path.exists(f"/proc/{w}")
                    and open(f"/proc/{w}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
