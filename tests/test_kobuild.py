"""kobuild on custom modules built here with -g against the Debian 6.1 headers
(data/kmod-src/kotest, scripts/make_kobuild_modules.py): every layout equals pahole and
every prototype pfunct on the same .ko; the DB works as an overlay in the resolver (API, CLI,
server) and in the unmodified surftrace client; compressed and .ko.debug inputs read alike;
bad input is one line, an exit code, and nothing written.
Distro modules (the Debian -dbg package, split BTF, `dbhive build --modules`) are in
test_kobuild_distro.py."""
from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import urllib.request

import pytest

from dbhive import model as M
from dbhive import store
from resolver import Resolver
from resolver.errors import NoKernelDB, NoSuchFunction, NoSuchType
from tests.support import need_tool
from tests.support.pahole_compare import compare_with_pahole, pahole_view
from tests.support.db_dump import dump_tables
from tests.support.pahole_oracle import pahole_layouts, pahole_typedef, typedef_target
from tests.support.pfunct_oracle import check_functions
from tests.support.surftrace_client import surftrace_run, surftrace_show, surftrace_show_remote

BIN = os.path.dirname(sys.executable)
KOBUILD = os.path.join(BIN, "kobuild")
RESOLVER = os.path.join(BIN, "resolver")


def kobuild(*args, cwd=None, check=True):
    p = subprocess.run([KOBUILD, *args], capture_output=True, text=True, cwd=cwd)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="session")
def kotest() -> dict:
    """{module name: .ko path} of the custom modules (built once, cached)."""
    for tool in ("gcc", "make", "pahole"):
        need_tool(tool)
    from scripts import make_kobuild_modules
    return make_kobuild_modules.build()


@pytest.fixture(scope="module")
def prev_db(kotest, tmp_path_factory) -> str:
    """`kobuild DIR` in a fresh directory: ./prev.db."""
    work = tmp_path_factory.mktemp("kobuild")
    src = work / "ko"
    src.mkdir()
    for path in kotest.values():
        shutil.copy(path, src)
    p = kobuild(str(src), cwd=str(work))
    assert "2 modules (dbhive_kotest, dbhive_kotest_peer)" in p.stdout
    assert sorted(os.listdir(work)) == ["ko", "prev.db"]      # no temp files left behind
    return str(work / "prev.db")


def test_custom_modules_equal_pahole(prev_db, kotest):
    g = store.load_graph(prev_db)
    for name, ko in kotest.items():
        result = compare_with_pahole(g, pahole_layouts(ko, "dwarf"))
        assert result["problems"] == [], name
        assert result["checked"] >= 100, name
    mine = {t.name: t for _, t in g.named(M.COMPOSITE + (M.ENUM,))}
    assert {"kotest_dev", "kotest_stats", "kotest_addr", "kotest_packed", "kotest_state",
            "kotest_peer", "pid_entry"} <= set(mine)


def test_custom_module_functions_equal_pfunct(prev_db, kotest):
    g = store.load_graph(prev_db)
    for name, ko in kotest.items():
        assert check_functions(g, ko, module=name) == [], name
    fns = {f.name: f for f in g.functions}
    assert fns["kotest_xmit"].module == "dbhive_kotest"
    assert fns["kotest_peer_poke"].module == "dbhive_kotest_peer"
    assert fns["kotest_local"].static and not fns["kotest_xmit"].static
    assert g.types[fns["kotest_set_state"].proto].variadic
    conn = sqlite3.connect(prev_db)
    rows = dict(((f, (json.loads(a), r, m)) for f, a, r, m in
                 conn.execute("SELECT func, args, ret, module FROM funs")))
    assert rows["kotest_account"] == (["struct kotest_dev *", "const struct kotest_stats *",
                                       "kotest_pair_t", "union kotest_addr *"], "long int",
                                      "dbhive_kotest")
    assert rows["kotest_local"][1] == "static int"
    assert {m for (_a, _r, m) in rows.values()} == {"dbhive_kotest", "dbhive_kotest_peer"}


def test_oracles_catch_wrong_types(prev_db, kotest):
    """The two oracles fail on a graph that is wrong in one member or one parameter."""
    ko = kotest["dbhive_kotest"]
    g = store.load_graph(prev_db)
    dev = next(t for _, t in g.named() if t.name == "kotest_dev")
    dev.members[3].bit_offset += 1                          # the `mode` bitfield
    assert compare_with_pahole(g, pahole_layouts(ko, "dwarf"))["problems"]
    g = store.load_graph(prev_db)
    xmit = next(f for f in g.functions if f.name == "kotest_xmit")
    proto = g.types[xmit.proto]
    proto.params[0] = M.Param(None, proto.params[1].type)   # skb's type replaced
    assert any("kotest_xmit" in p for p in check_functions(g, ko, "dbhive_kotest"))
    g = store.load_graph(prev_db)
    g.functions = [f for f in g.functions if f.name != "kotest_local"]
    assert any("kotest_local" in p for p in check_functions(g, ko, "dbhive_kotest"))


@pytest.fixture(scope="session")
def kotest_aarch64() -> dict:
    """The same modules cross-built for aarch64 against Debian's 6.1 arm64 build tree."""
    for tool in ("aarch64-linux-gnu-gcc-12", "make", "pahole", "readelf"):
        need_tool(tool)
    from scripts import make_kobuild_modules
    return make_kobuild_modules.build(arch="aarch64")


def _debug_relocations(ko: str) -> dict:
    """{relocation type: count} in the .rela.debug_* sections of `ko` (binutils readelf)."""
    out = subprocess.run(["readelf", "-rW", ko], capture_output=True, text=True,
                         check=True).stdout
    counts: dict = {}
    section = ""
    for line in out.splitlines():
        if line.startswith("Relocation section"):
            section = line.split("'")[1]
        elif section.startswith(".rela.debug") and " R_" in line:
            kind = line.split()[2]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def test_aarch64_modules_equal_pahole(kotest_aarch64, tmp_path, monkeypatch):
    """aarch64 .ko files (ET_REL: their DWARF holds R_AARCH64_ABS32/ABS64 addends) read
    alike: every layout equals pahole, every prototype pfunct, on the same files; with the
    relocations left unapplied the same comparison fails."""
    for ko in kotest_aarch64.values():
        relocs = _debug_relocations(ko)
        assert relocs.get("R_AARCH64_ABS32", 0) > 1000 and relocs.get("R_AARCH64_ABS64"), relocs
    src = tmp_path / "ko"
    src.mkdir()
    for path in kotest_aarch64.values():
        shutil.copy(path, src)
    p = kobuild(str(src), "-o", str(tmp_path / "arm.db"), "--json")
    meta = json.loads(p.stdout)["meta"]
    assert (meta["arch"], meta["release"]) == ("aarch64", "6.1.0-47-arm64")
    g = store.load_graph(str(tmp_path / "arm.db"))
    for name, ko in kotest_aarch64.items():
        result = compare_with_pahole(g, pahole_layouts(ko, "dwarf"))
        assert result["problems"] == [], name
        assert result["checked"] >= 100, name
        assert check_functions(g, ko, module=name) == [], name
    from dbhive import elf
    from dbhive.modules import kobuild as run_kobuild
    monkeypatch.setattr(elf.quirks, "needs_debug_relocations", lambda e_type: False)
    ko = kotest_aarch64["dbhive_kotest"]
    run_kobuild([ko], out=str(tmp_path / "unrelocated.db"))
    g = store.load_graph(str(tmp_path / "unrelocated.db"))
    assert compare_with_pahole(g, pahole_layouts(ko, "dwarf"))["problems"]


def _modinfo(field: str, ko: str) -> str:
    need_tool("modinfo")
    return subprocess.run(["modinfo", "-F", field, ko], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_meta_lists_modules(prev_db, kotest):
    meta = store.read_meta(prev_db)
    mods = {m["name"]: m for m in json.loads(meta["modules"])}
    assert set(mods) == set(kotest)
    for name, ko in kotest.items():
        assert mods[name]["vermagic"].strip() == _modinfo("vermagic", ko)
        assert mods[name]["srcversion"] == _modinfo("srcversion", ko)
        assert mods[name]["file"] == os.path.basename(ko)
    assert mods["dbhive_kotest"]["srcversion"] and mods["dbhive_kotest"]["version"] == "1.2"
    assert meta["release"] == _modinfo("vermagic", kotest["dbhive_kotest"]).split()[0]
    assert (meta["arch"], meta["db_kind"], meta["type_source"], meta["module_count"]) == \
        ("x86_64", "modules", "dwarf", "2")


def test_keys_path_equals_graph_path(kotest, tmp_path):
    """What workers send (the DWARF reader's keys before finalize) merges into the same DB as
    the finalized graphs themselves."""
    from dbhive.dwarf import read_dwarf, read_dwarf_keys
    from dbhive.modules.merge import TypeMerger, table_keys
    by_keys, by_graphs = TypeMerger(), TypeMerger()
    for name, ko in kotest.items():
        table, functions = read_dwarf_keys(ko)
        assert by_keys.add_keys(table_keys(table, functions, name))
        by_graphs.add(read_dwarf(ko, module=name), name)
    a, b = by_keys.graph(), by_graphs.graph()
    assert len(a.types) == len(b.types) and _canonical(a) == _canonical(b)     # ids may differ


def _canonical(g) -> tuple:
    """A graph without its ids: every type and function as C spells it."""
    spell = g.spelling_cache()
    types = sorted(repr((t.kind, spell(tid), t.size, t.origin,
                         [(m.name, spell(m.type), m.bit_offset, m.bit_size)
                          for m in t.members or ()], t.enumerators))
                   for tid, t in enumerate(g.types))
    funcs = sorted((f.name, spell(f.proto), f.static, f.file, f.line, f.module)
                   for f in g.functions)
    return types, funcs


def test_module_own_layout_kept_beside_the_kernels(kotest, debian_vmlinux_btf, tmp_path):
    """dbhive_kotest_peer has its own `struct pid_entry` (24 bytes); the kernel's is another
    (40 bytes).  Merged into one DB, each one's pointers keep reaching its own layout."""
    from dbhive.btf import read_btf
    from dbhive.modules.discover import find_modules
    from dbhive.modules.kobuild import merge_module, read_module
    from dbhive.modules.merge import TypeMerger
    with open(debian_vmlinux_btf, "rb") as fh:
        kernel = read_btf(fh.read(), debian_vmlinux_btf)
    m = TypeMerger()
    m.add(kernel, "vm")
    kernel_scoped = m.scoped_names       # BTF pointers to non-first same-name layouts
    mf, = find_modules([kotest["dbhive_kotest_peer"]])
    rm = read_module(mf, "dwarf", str(tmp_path))          # keys, as a worker sends them
    assert not m.add_keys(rm.keys)                         # pid_entry needs scoping
    merge_module(m, rm, str(tmp_path))                     # so it is read again as a graph
    assert (m.rereads, m.scoped_names - kernel_scoped) == (1, 1)
    db = str(tmp_path / "merged.db")
    store.write_db(m.graph(), {"release": "merged", "arch": "x86_64"}, db)
    peer_layouts = pahole_layouts(kotest["dbhive_kotest_peer"], "dwarf")
    peer = peer_layouts["struct pid_entry"][0]
    holder = peer_layouts["struct kotest_peer"][0]
    kern = pahole_layouts(debian_vmlinux_btf, "btf")["struct pid_entry"][0]
    assert peer.size != kern.size
    r = Resolver.open(db=db, overlay=None)
    hop = r.offset("kotest_peer->entry->peer_next")
    assert hop.offset == peer.member("peer_next").offset
    assert r.offset("kotest_peer.inline_entry.peer_flags").offset == \
        holder.member("inline_entry").offset + peer.member("peer_flags").offset
    g = store.load_graph(db)
    sizes = sorted(t.size for _, t in g.named() if t.name == "pid_entry")
    assert sizes == sorted([peer.size, kern.size])
    # the kernel's own users of pid_entry (proc_pident_lookup's table) still reach 40 bytes
    fn = next(f for f in g.functions if f.name == "proc_pident_lookup")
    ptrs = [g.types[g.strip(p.type)] for p in g.types[fn.proto].params]
    targets = {g.types[g.strip(t.ref)].size for t in ptrs
               if t.kind == M.PTR and g.types[g.strip(t.ref)].name == "pid_entry"}
    assert targets == {kern.size}


def test_base_db_completes_declared_types(prev_db, kotest, debian_db, running_db, tmp_path):
    """--base DB: the layouts of what the modules only declare come from the kernel's DB
    (one level: what those layouts point to stays declared); the modules' own are kept."""
    out = str(tmp_path / "b.db")
    p = kobuild(*kotest.values(), "--base", debian_db, "-o", out)
    assert "layouts from the base" in p.stdout
    plain, based, base = store.load_graph(prev_db), store.load_graph(out), store.load_graph(debian_db)
    declared = {(t.encoding, t.name) for t in plain.types if t.kind == M.FWD}
    assert ("struct", "fs_context") in declared
    complete = {(t.kind, t.name): tid for tid, t in based.named(M.COMPOSITE)
                if t.size is not None}
    base_ids = {(t.kind, t.name): tid for tid, t in base.named(M.COMPOSITE)
                if t.size is not None}
    filled = [key for key in declared if key in base_ids]
    assert len(filled) >= 100 and all(key in complete for key in filled)
    for key in filled:
        assert pahole_view(based, complete[key]) == pahole_view(base, base_ids[key]), key
    meta = store.read_meta(out)
    base_all = {(t.kind, t.name) for _, t in base.named(M.COMPOSITE + (M.ENUM,))
                if t.size is not None}
    assert meta["base"] == debian_db
    assert int(meta["base_types"]) == len(declared & base_all) > len(filled)    # enums too
    for name, ko in kotest.items():
        assert compare_with_pahole(based, pahole_layouts(ko, "dwarf"))["problems"] == [], name
    p = kobuild(*kotest.values(), "--base", running_db, "-o", out, check=False)
    assert p.returncode == 1 and "but the base" in p.stderr and "is for" in p.stderr


@pytest.fixture(scope="module")
def plain_dump(prev_db):
    return dump_tables(prev_db)


@pytest.mark.parametrize("kind", ["xz", "zst", "gz"])
def test_compressed_modules_read_alike(kotest, plain_dump, tmp_path, kind):
    from scripts.make_kobuild_modules import compressed
    for ko in kotest.values():
        compressed(ko, str(tmp_path / "ko"), (kind,))
    assert sorted(os.listdir(tmp_path / "ko")) == sorted(
        f"{os.path.basename(ko)}.{kind}" for ko in kotest.values())
    kobuild(str(tmp_path / "ko"), "-o", str(tmp_path / "c.db"))
    assert dump_tables(str(tmp_path / "c.db")) == plain_dump
    mods = json.loads(store.read_meta(str(tmp_path / "c.db"))["modules"])
    assert {m["file"] for m in mods} == {f"{os.path.basename(k)}.{kind}" for k in kotest.values()}


def test_debug_only_module(kotest, prev_db, tmp_path):
    """A `.ko.debug` (objcopy --only-keep-debug, as Fedora ships them): .modinfo is NOBITS,
    the name comes from the file name; the types are the same."""
    need_tool("objcopy")
    ko = kotest["dbhive_kotest"]
    dbg = tmp_path / "dbhive_kotest.ko.debug"
    subprocess.run(["objcopy", "--only-keep-debug", ko, str(dbg)], check=True)
    kobuild(str(dbg), "-o", str(tmp_path / "d.db"))
    g = store.load_graph(str(tmp_path / "d.db"))
    assert compare_with_pahole(g, pahole_layouts(ko, "dwarf"))["problems"] == []
    assert check_functions(g, ko, "dbhive_kotest") == []
    mods = json.loads(store.read_meta(str(tmp_path / "d.db"))["modules"])
    assert [(m["name"], m["vermagic"]) for m in mods] == [("dbhive_kotest", "")]


# ---------------------------------------------------------------------------------------
# the overlay: resolver API, CLI, server; the surftrace client

def _pahole_facts(ko: str) -> dict:
    """What pahole says of dbhive_kotest's own types: kotest_dev's layout, the anonymous
    struct kotest_pair_t names, what kotest_id_t is, and (as the sizes of kotest_dev's
    members of those types) the sizes of kotest_id_t and enum kotest_state."""
    lay = pahole_layouts(ko, "dwarf")
    dev = lay["struct kotest_dev"][0]
    id_m, state_m = dev.member("id"), dev.member("state")
    assert (id_m.type, state_m.type) == ("kotest_id_t", "enum kotest_state")
    return {"lay": lay, "dev": dev, "pair": pahole_typedef(ko, "kotest_pair_t"),
            "id": id_m, "id_type": typedef_target(ko, "kotest_id_t"), "state": state_m}


def test_resolver_overlay(prev_db, debian_db, kotest):
    facts = _pahole_facts(kotest["dbhive_kotest"])
    lay = facts["lay"]
    with Resolver.open(db=debian_db, overlay=prev_db) as r:
        # struct: every member pahole prints, nested and anonymous ones too
        dev = lay["struct kotest_dev"][0]
        checked = 0
        for m in dev.members:
            if m.path in ("info", ) or m.type.endswith("{...}"):
                continue
            o = r.offset(f"kotest_dev.{m.path}")
            assert (o.offset, o.size) == (m.offset, m.size), m.path
            assert o.bit_size == m.bit_size and o.bit_offset == m.bit_offset, m.path
            checked += 1
        assert checked >= 20
        # union, anonymous typedef'd struct, typedef, enum
        assert r.struct("union kotest_addr").size == lay["union kotest_addr"][0].size
        proto = lay["union kotest_addr"][0].member("pp.proto")
        assert (r.offset("kotest_addr.pp.proto").offset, r.offset("kotest_addr.pp.proto").size) \
            == (proto.offset, proto.size)
        pair = r.struct("kotest_pair_t")
        assert [(m.name, m.offset, m.size) for m in pair.members] == \
            [(m.path, m.offset, m.size) for m in facts["pair"].members]
        assert pair.size == facts["pair"].size == facts["dev"].member("pair").size
        assert r.surftrace_type("kotest_id_t") == {"name": "kotest_id_t",
                                                   "type": facts["id_type"],
                                                   "size": facts["id"].size}
        assert r.sizeof_name("enum kotest_state") == facts["state"].size
        assert r.surftrace_type("enum kotest_state")["size"] == facts["state"].size
        # functions
        f, = r.func("kotest_account")
        assert f.module == "dbhive_kotest" and f.ret == "long int"
        assert [p.type for p in f.params] == ["struct kotest_dev *", "const struct kotest_stats *",
                                              "kotest_pair_t", "union kotest_addr *"]
        assert r.func("kotest_set_state")[0].variadic
        # a module struct -> a kernel struct, against the kernel DB alone
        kernel = Resolver.open(db=debian_db, overlay=None)
        owner = r.offset("kotest_dev->owner->pid")
        assert owner.hops[0].offset == dev.member("owner").offset
        assert owner.offset == kernel.offset("task_struct.pid").offset
        assert r.offset("kotest_dev->netdev->mtu").offset == kernel.offset("net_device.mtu").offset
        with pytest.raises(NoSuchType):
            kernel.offset("kotest_dev.id")
        with pytest.raises(NoSuchFunction):
            kernel.func("kotest_xmit")
        # a name both define: the overlay's layout, and the answer says the kernel has another
        peer = pahole_layouts(kotest["dbhive_kotest_peer"], "dwarf")["struct pid_entry"][0]
        mine = r.offset("pid_entry.peer_flags")
        assert (mine.offset, mine.size) == (peer.member("peer_flags").offset,
                                            peer.member("peer_flags").size)
        assert "the kernel has another layout" in mine.note
        assert r.struct("pid_entry").size == peer.size != kernel.struct("pid_entry").size
        assert "kernel has another" not in (r.offset("list_head.next").note or "")
        assert kernel.offset("pid_entry.len").note is None
        kernel.close()


def test_overlay_found_as_prev_db_and_lbc_prevdb(prev_db, debian_db, kotest, tmp_path,
                                                 monkeypatch):
    dev = pahole_layouts(kotest["dbhive_kotest"], "dwarf")["struct kotest_dev"][0]
    monkeypatch.delenv("LBC_PREVDB", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoSuchType):
        Resolver.open(db=debian_db).offset("kotest_dev.id")
    shutil.copy(prev_db, tmp_path / "prev.db")
    assert Resolver.open(db=debian_db).offset("kotest_dev.id").offset == dev.member("id").offset
    os.unlink(tmp_path / "prev.db")
    monkeypatch.setenv("LBC_PREVDB", prev_db)
    assert Resolver.open(db=debian_db).func("kotest_xmit")[0].module == "dbhive_kotest"


def test_resolver_cli_overlay(prev_db, debian_db, kotest):
    lay = pahole_layouts(kotest["dbhive_kotest"], "dwarf")["struct kotest_dev"][0]
    p = subprocess.run([RESOLVER, "--db", debian_db, "--overlay", prev_db, "struct", "--json",
                        "kotest_dev"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["size"] == lay.size
    top = {m.path: m for m in lay.members if "." not in m.path}
    named = {m["name"]: m["offset"] for m in s["members"] if m["name"]}
    assert len(named) == 18 and named == {n: top[n].offset for n in named}
    p = subprocess.run([RESOLVER, "--db", debian_db, "--overlay", prev_db, "func",
                        "kotest_peer_poke"], capture_output=True, text=True)
    assert "u64 kotest_peer_poke(struct kotest_peer *p, struct pid_entry *e);" in p.stdout
    p = subprocess.run([RESOLVER, "--db", debian_db, "--no-overlay", "func", "kotest_xmit"],
                       capture_output=True, text=True, env={**os.environ, "LBC_PREVDB": prev_db})
    assert p.returncode == 4 and "kotest_xmit" in p.stdout


def _free_loopback_server(**kw):
    from resolver.server import make_server
    last = None
    for _ in range(20):
        host = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
        try:
            return make_server(host=host, port=80, **kw)
        except OSError as e:
            last = e
    pytest.fail(f"cannot bind port 80 on a loopback address: {last}")


@pytest.fixture(scope="module")
def overlay_server(prev_db, debian_db):
    if os.geteuid() != 0:
        pytest.fail("the surftrace client needs the server on port 80: run the tests as root")
    srv = _free_loopback_server(db=debian_db, overlay=prev_db)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _post(srv, path, body):
    req = urllib.request.Request(f"http://{srv.server_address[0]}:80{path}",
                                 data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_server_answers_from_the_overlay(overlay_server, prev_db, debian_db, kotest):
    facts = _pahole_facts(kotest["dbhive_kotest"])
    with Resolver.open(db=debian_db, overlay=prev_db) as r:
        reqs = [{"cmd": "struct", "struct": "struct kotest_dev"},
                {"cmd": "struct", "struct": "union kotest_addr"},
                {"cmd": "struct", "struct": "kotest_pair_t"},
                {"cmd": "type", "type": "kotest_id_t"},
                {"cmd": "type", "type": "enum kotest_state"},
                {"cmd": "func", "func": "kotest_xmit"},
                {"cmd": "struct", "struct": "struct task_struct"}]
        res = _post(overlay_server, "/lbc", [dict(q, arch="x86_64", ver="x") for q in reqs])
        got = [x["res"] for x in res["res"]]
        assert got[0] == r.surftrace_struct("struct kotest_dev")
        assert got[0]["size"] == facts["dev"].size
        assert got[1] == r.surftrace_struct("union kotest_addr")
        assert [(c["name"], c["offset"], c["size"]) for c in got[2]["cell"]] == \
            [(m.path, m.offset, m.size) for m in facts["pair"].members]
        assert got[2]["size"] == facts["pair"].size
        assert got[3] == {"name": "kotest_id_t", "type": facts["id_type"],
                          "size": facts["id"].size}
        assert got[4]["size"] == facts["state"].size
        assert got[5] == r.surftrace_funcs("kotest_xmit")
        assert got[5][0]["args"] == ["struct sk_buff *", "struct kotest_dev *"]
        assert got[6]["size"] == r.surftrace_struct("struct task_struct")["size"]
        api = _post(overlay_server, "/api/offset", {"paths": ["kotest_dev.stats", "kotest_dev->owner->pid"]})
        assert api["offsets"]["kotest_dev.stats"]["offset"] == r.offset("kotest_dev.stats").offset
        assert api["offsets"]["kotest_dev->owner->pid"]["offset"] == \
            r.offset("kotest_dev->owner->pid").offset
        fn = _post(overlay_server, "/api/func", {"name": "kotest_peer_poke"})
        assert "kotest_peer_poke" in json.dumps(fn)


def test_server_over_a_hive_applies_an_overlay_to_its_own_kernel_only(prev_db, debian_db,
                                                                      running_db, tmp_path):
    """A hive of two kernels (the 6.1 DB and this machine's) served with the 6.1 overlay:
    the module's types answer for 6.1 only; with one --db of the other kernel the server
    refuses to start."""
    from dbhive import hive as hivemod
    from resolver.kernel import KernelDB
    hive = str(tmp_path / "hive")
    releases = []
    for db in (debian_db, running_db):
        k = KernelDB(db)
        meta = dict(k.meta)
        k.close()
        dest = hivemod.db_path(hive, meta["arch"], None, meta["release"], meta.get("flavour"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(db, dest)
        releases.append(meta["release"])
    srv = _free_loopback_server(hive=hive, overlay=prev_db)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        q = {"cmd": "struct", "struct": "struct kotest_dev", "arch": "x86_64"}
        mod, other = (_post(srv, "/lbc", [dict(q, ver=rel)])["res"][0] for rel in releases)
        with Resolver.open(db=debian_db, overlay=prev_db) as r:
            assert mod["res"] == r.surftrace_struct("struct kotest_dev")
        assert "res" not in other or not other["res"], other       # not in that kernel
        task = _post(srv, "/lbc", [{"cmd": "struct", "struct": "struct task_struct",
                                    "arch": "x86_64", "ver": releases[1]}])["res"][0]
        with Resolver.open(db=running_db, overlay=None) as r:
            assert task["res"]["size"] == r.surftrace_struct("struct task_struct")["size"]
    finally:
        srv.shutdown()
        srv.server_close()
    with pytest.raises(NoKernelDB, match="is for kernel"):
        _free_loopback_server(db=running_db, overlay=prev_db)


EXPRS = ["p kotest_xmit len=%0->len dev=%0->dev->name proto=%0->protocol",
         "p kotest_packed_sum pos=%1->f_pos pid=%2->pid"]


def test_surftrace_client_through_lbc_prevdb(prev_db, debian_db, tmp_path):
    """The unmodified client reads module functions from $LBC_PREVDB (their arguments are
    kernel structs, from the kernel DB): the same translation as ours; without the overlay
    it does not know the function."""
    theirs = surftrace_show(debian_db, EXPRS, tmp_path, env={"LBC_PREVDB": prev_db})
    p = subprocess.run([RESOLVER, "--db", debian_db, "--overlay", prev_db, "expr",
                        "--surftrace", *EXPRS], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    ours = [eval(line) for line in p.stdout.splitlines()]          # noqa: S307 (our output)
    assert theirs == ours
    with Resolver.open(db=debian_db, overlay=None) as k:
        assert f"len=+0x{k.offset('sk_buff.len').offset:x}(%di):u32" in theirs[0]["fxpr"]
    p = surftrace_run(debian_db, EXPRS[:1], tmp_path)
    assert p.returncode != 0 and "no kotest_xmit debuginfo" in p.stderr


def test_surftrace_client_remote_mode_gets_module_structs(overlay_server, kotest, tmp_path):
    """Remote mode: the client asks our server (with the overlay) for the module's function
    *and* struct, which its local mode cannot do (it never reads prev.db for structs).  The
    offsets are pahole's on the .ko (the second argument's register is x86_64's %si)."""
    dev = pahole_layouts(kotest["dbhive_kotest"], "dwarf")["struct kotest_dev"][0]
    exprs = ["p kotest_xmit st=%1->state id=%1->id hi=%1->hi"]
    theirs = surftrace_show_remote(overlay_server.server_address[0], exprs, tmp_path)
    want = " ".join(f"{n}=+0x{m.offset:x}(%si):u{8 * m.size}" for n, m in
                    (("st", dev.member("state")), ("id", dev.member("id")),
                     ("hi", dev.member("hi"))))
    assert theirs[0]["fxpr"].startswith(f"p:p0 kotest_xmit {want}")


# ---------------------------------------------------------------------------------------
# the overlay in the tracer; an overlay for another kernel is refused

def _pahole_member(lay: dict, path: str):
    """pahole's view of a tracer member path `struct.a.b`: (the byte its lowest bit is in,
    the member), through members of a named struct type (which pahole prints as one member)
    by that type's own layout."""
    root, *parts = path.split(".")
    layout, off = lay[f"struct {root}"][0], 0
    while parts:
        for n in range(len(parts), 0, -1):        # pahole's flattened `x.y` paths first
            try:
                m = layout.member(".".join(parts[:n]))
                break
            except KeyError:
                continue
        else:
            raise KeyError(f"pahole has no {path}")
        off, parts = off + m.offset, parts[n:]
        if parts:
            layout = lay[m.type][0]
    return (off * 8 + (m.bit_offset or 0)) // 8, m


def test_tracer_offsets_through_the_overlay(prev_db, debian_db, kotest, tmp_path):
    """`tracer offsets` with the 6.1 DB and the kotest overlay: the fields whose struct the
    modules define (pahole prints it for their .ko) come from the overlay, at pahole's
    offsets on the .ko; the others from the DB; the same values as without the overlay (one
    kernel).  ./prev.db and $LBC_PREVDB are found as the resolver finds them, with a warning."""
    from tests.support.tracer_env import tracer
    by_module = {}
    for ko in kotest.values():
        for key, lays in pahole_layouts(ko, "dwarf").items():
            by_module.setdefault(key, lays)
    base = json.loads(tracer("offsets", "--ignore-btf", "--db", debian_db, "--no-overlay",
                             "--json", check=0).stdout)
    d = json.loads(tracer("offsets", "--ignore-btf", "--db", debian_db, "--overlay", prev_db,
                          "--json", check=0).stdout)
    assert base["overlays"] == [] and d["overlays"] == [prev_db]
    assert {f["source"] for f in base["fields"]} == {f"db:{debian_db}"}
    assert [f["value"] for f in d["fields"]] == [f["value"] for f in base["fields"]]
    from_overlay = []
    for f in d["fields"]:
        if f["path"] is None:
            continue
        in_module = f"struct {f['path'].split('.')[0]}" in by_module
        assert f["source"] == (f"overlay:{prev_db}" if in_module else f"db:{debian_db}"), f
        if in_module:
            byte, m = _pahole_member(by_module, f["path"])
            assert f["value"] == byte, (f, m)
            from_overlay.append(f["field"])
    assert len(from_overlay) >= 10, from_overlay
    # found as ./prev.db in the working directory, and through $LBC_PREVDB
    shutil.copy(prev_db, tmp_path / "prev.db")
    here = json.loads(tracer("offsets", "--ignore-btf", "--db", debian_db, "--json",
                             cwd=str(tmp_path), check=0).stdout)
    assert here["overlays"] == [str(tmp_path / "prev.db")]
    assert any("--no-overlay" in w for w in here["warnings"]), here["warnings"]
    env = json.loads(tracer("offsets", "--ignore-btf", "--db", debian_db, "--json",
                            env={"LBC_PREVDB": prev_db}, check=0).stdout)
    assert env["overlays"] == [prev_db] and [f["source"] for f in env["fields"]] == \
        [f["source"] for f in d["fields"]]


def _refused(res, overlay: str, overlay_release: str, kernel_release: str) -> None:
    assert res.returncode == 3 and res.stdout == "", (res.returncode, res.stderr)
    line = res.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert f"overlay {overlay} is for kernel {overlay_release}" in line, line
    assert f"is for {kernel_release}" in line and "--no-overlay" in line, line


def test_overlay_for_another_kernel_is_refused(prev_db, debian_db, running_db, running_btf,
                                              kotest, tmp_path):
    """The 6.1 overlay with the running kernel's DB, with its BTF, by $LBC_PREVDB: refused
    by the tracer and the resolver (one line, exit 3); with --no-overlay it runs.  An
    overlay kobuild made of the same modules with vermagic 6.1.0-48 is refused with the
    6.1.0-47 DB; one for another arch too; one that does not say its kernel is used with a
    warning."""
    from tests.support.tracer_env import tracer
    ov_rel = store.read_meta(prev_db)["release"]
    run_rel = store.read_meta(running_db)["release"]
    assert ov_rel == store.read_meta(debian_db)["release"] != run_rel
    _refused(tracer("offsets", "--ignore-btf", "--db", running_db, "--overlay", prev_db),
             prev_db, ov_rel, run_rel)
    _refused(tracer("offsets", "--overlay", prev_db), prev_db, ov_rel, run_rel)   # its BTF
    _refused(tracer("offsets", "--ignore-btf", "--db", running_db,
                    env={"LBC_PREVDB": prev_db}), prev_db, ov_rel, run_rel)
    ok = tracer("offsets", "--ignore-btf", "--db", running_db, "--no-overlay", "--json",
                env={"LBC_PREVDB": prev_db}, check=0)
    assert json.loads(ok.stdout)["overlays"] == []
    p = subprocess.run([RESOLVER, "--db", running_db, "--overlay", prev_db, "offset",
                        "task_struct.files"], capture_output=True, text=True)
    _refused(p, prev_db, ov_rel, run_rel)
    # a real overlay of the next ABI (vermagic 6.1.0-48), against the 6.1.0-47 DB
    os.makedirs(tmp_path / "next")
    for name, ko in kotest.items():
        _vermagic_changed(ko, str(tmp_path / "next" / os.path.basename(ko)))
    next_db = str(tmp_path / "next.db")
    kobuild(str(tmp_path / "next"), "-o", next_db)
    next_rel = store.read_meta(next_db)["release"]
    assert next_rel != ov_rel
    _refused(tracer("offsets", "--ignore-btf", "--db", debian_db, "--overlay", next_db),
             next_db, next_rel, ov_rel)
    with pytest.raises(NoKernelDB, match=f"is for kernel {next_rel}"):
        Resolver.open(db=debian_db, overlay=next_db)
    # another arch; no vermagic at all (a .ko.debug's overlay): a warning, not a refusal
    other_arch = str(tmp_path / "arm.db")
    shutil.copy(prev_db, other_arch)
    con = sqlite3.connect(other_arch)
    con.execute("UPDATE meta SET value = ? WHERE key = 'arch'", ("aarch64",))
    con.commit()
    con.close()
    res = tracer("offsets", "--ignore-btf", "--db", debian_db, "--overlay", other_arch)
    assert res.returncode == 3 and "is for aarch64" in res.stderr, res.stderr
    dbg = tmp_path / "dbhive_kotest.ko.debug"
    subprocess.run(["objcopy", "--only-keep-debug", kotest["dbhive_kotest"], str(dbg)],
                   check=True)
    unsaid = str(tmp_path / "unsaid.db")
    kobuild(str(dbg), "-o", unsaid)
    d = json.loads(tracer("offsets", "--ignore-btf", "--db", debian_db, "--overlay", unsaid,
                          "--json", check=0).stdout)
    assert d["overlays"] == [unsaid]
    assert any("does not say which kernel" in w for w in d["warnings"]), d["warnings"]


# ---------------------------------------------------------------------------------------
# bad input

def _vermagic_changed(ko: str, dest: str) -> str:
    data = open(ko, "rb").read()
    old = b"vermagic=6.1.0-47-cloud-amd64 "
    assert data.count(old) == 1
    open(dest, "wb").write(data.replace(old, b"vermagic=6.1.0-48-cloud-amd64 "))
    return dest


def _bad_cases(kotest, tmp):
    ko = kotest["dbhive_kotest"]
    os.makedirs(f"{tmp}/dup/a")
    shutil.copy(ko, f"{tmp}/dup/")
    shutil.copy(ko, f"{tmp}/dup/a/dbhive-kotest.ko")
    os.makedirs(f"{tmp}/mixed")
    shutil.copy(ko, f"{tmp}/mixed/")
    _vermagic_changed(kotest["dbhive_kotest_peer"], f"{tmp}/mixed/dbhive_kotest_peer.ko")
    os.makedirs(f"{tmp}/empty")
    with open(ko, "rb") as fh:
        head = fh.read(4096)
    from scripts.make_kobuild_modules import compressed
    xz = compressed(ko, f"{tmp}/xz", ("xz",))["xz"]
    with open(xz, "r+b") as fh:
        fh.truncate(os.path.getsize(xz) // 2)
    big = compressed(ko, f"{tmp}/big", ("zst",))["zst"]
    open(f"{tmp}/short.ko", "wb").write(head)
    subprocess.run(["objcopy", "--strip-debug", ko, f"{tmp}/stripped.ko"], check=True)
    os.makedirs(f"{tmp}/outdir")
    return [
        ([f"{tmp}/dup"], "two files are module dbhive_kotest", 1),
        ([f"{tmp}/mixed"], "was built for kernel 6.1.0-48-cloud-amd64", 1),
        ([f"{tmp}/empty"], "no kernel modules", 1),
        ([f"{tmp}/missing"], "no such file or directory", 1),
        (["/bin/true"], "not a kernel module", 1),
        ([xz], "damaged compressed module", 1),
        ([big, "--max-module-bytes", "100000"], "decompresses to more than 100000 bytes", 1),
        ([f"{tmp}/short.ko"], "truncated", 1),
        ([f"{tmp}/stripped.ko"], "has no DWARF", 1),
        ([ko, "--source", "btf"], "needs the kernel's BTF", 1),
        ([f"{tmp}/stripped.ko", "--base-btf", ko], "no .BTF", 1),
        ([ko, "-o", f"{tmp}/outdir"], "is a directory", 1),
        ([ko, "-o", f"{tmp}/nodir/x.db"], "does not exist", 1),
        ([ko, "--base", f"{tmp}/nodb.db"], "no such DB file", 1),
        ([ko, "--base", "running"], "the running kernel is for", 1),
    ]


def test_bad_input_is_one_line_and_nothing_written(kotest, tmp_path):
    tmp = str(tmp_path)
    for args, message, code in _bad_cases(kotest, tmp):
        out = os.path.join(tmp, "out.db")
        argv = args if "-o" in args else args + ["-o", out]
        p = kobuild(*argv, check=False)
        assert p.returncode == code, (args, p.stderr)
        assert message in p.stderr, (args, p.stderr)
        assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, (args, p.stderr)
        assert not os.path.exists(out), args
        assert not [f for f in os.listdir(tmp) if f.startswith((".tmp-", "kobuild-"))], args


def test_help_has_examples():
    p = kobuild("--help")
    assert "Examples:" in p.stdout and "--base-btf" in p.stdout and "LBC_PREVDB" in p.stdout
