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
from resolver.errors import NoSuchFunction, NoSuchType
from tests.support import need_tool
from tests.support.pahole_compare import compare_with_pahole, pahole_view
from tests.support.db_dump import dump_tables
from tests.support.pahole_oracle import pahole_layouts
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
    assert (peer.size, kern.size) == (24, 40)
    r = Resolver.open(db=db, overlay=None)
    hop = r.offset("kotest_peer->entry->peer_next")
    assert hop.offset == peer.member("peer_next").offset
    assert r.offset("kotest_peer.inline_entry.peer_flags").offset == \
        holder.member("inline_entry").offset + peer.member("peer_flags").offset
    g = store.load_graph(db)
    sizes = sorted(t.size for _, t in g.named() if t.name == "pid_entry")
    assert sizes == [24, 40]
    # the kernel's own users of pid_entry (proc_pident_lookup's table) still reach 40 bytes
    fn = next(f for f in g.functions if f.name == "proc_pident_lookup")
    ptrs = [g.types[g.strip(p.type)] for p in g.types[fn.proto].params]
    targets = {g.types[g.strip(t.ref)].size for t in ptrs
               if t.kind == M.PTR and g.types[g.strip(t.ref)].name == "pid_entry"}
    assert targets == {40}


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

def test_resolver_overlay(prev_db, debian_db, kotest):
    lay = pahole_layouts(kotest["dbhive_kotest"], "dwarf")
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
        assert r.offset("kotest_addr.pp.proto").offset == 2
        pair = r.struct("kotest_pair_t")
        assert (pair.size, [m.name for m in pair.members]) == (8, ["a", "b"])
        assert r.surftrace_type("kotest_id_t") == {"name": "kotest_id_t", "type": "unsigned int",
                                                   "size": 4}
        assert r.sizeof_name("enum kotest_state") == 4
        assert r.surftrace_type("enum kotest_state")["size"] == 4
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
        kernel.close()


def test_overlay_found_as_prev_db_and_lbc_prevdb(prev_db, debian_db, tmp_path, monkeypatch):
    monkeypatch.delenv("LBC_PREVDB", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NoSuchType):
        Resolver.open(db=debian_db).offset("kotest_dev.id")
    shutil.copy(prev_db, tmp_path / "prev.db")
    assert Resolver.open(db=debian_db).offset("kotest_dev.id").offset == 16
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


def test_server_answers_from_the_overlay(overlay_server, prev_db, debian_db):
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
        assert got[0] == r.surftrace_struct("struct kotest_dev") and got[0]["size"] == 248
        assert got[1] == r.surftrace_struct("union kotest_addr")
        assert got[2]["size"] == 8 and [c["name"] for c in got[2]["cell"]] == ["a", "b"]
        assert got[3] == {"name": "kotest_id_t", "type": "unsigned int", "size": 4}
        assert got[4]["size"] == 4
        assert got[5] == r.surftrace_funcs("kotest_xmit")
        assert got[5][0]["args"] == ["struct sk_buff *", "struct kotest_dev *"]
        assert got[6]["size"] == r.surftrace_struct("struct task_struct")["size"]
        api = _post(overlay_server, "/api/offset", {"paths": ["kotest_dev.stats", "kotest_dev->owner->pid"]})
        assert api["offsets"]["kotest_dev.stats"]["offset"] == r.offset("kotest_dev.stats").offset
        assert api["offsets"]["kotest_dev->owner->pid"]["offset"] == \
            r.offset("kotest_dev->owner->pid").offset
        fn = _post(overlay_server, "/api/func", {"name": "kotest_peer_poke"})
        assert "kotest_peer_poke" in json.dumps(fn)


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


def test_surftrace_client_remote_mode_gets_module_structs(overlay_server, tmp_path):
    """Remote mode: the client asks our server (with the overlay) for the module's function
    *and* struct, which its local mode cannot do (it never reads prev.db for structs)."""
    exprs = ["p kotest_xmit st=%1->state id=%1->id hi=%1->hi"]
    theirs = surftrace_show_remote(overlay_server.server_address[0], exprs, tmp_path)
    assert theirs[0]["fxpr"].startswith("p:p0 kotest_xmit st=+0x1c(%si):u32 id=+0x10(%si):u32 "
                                        "hi=+0x24(%si):u32")


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
