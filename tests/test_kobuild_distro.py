"""kobuild and `dbhive build --modules` on real distro modules: a filesystem (isofs), a
network driver (virtio_net), a protocol module whose struct the kernel points to
(mpls_router: `net_device.mpls_ptr`), and one compressed (dummy.ko.xz), from the Debian
6.1 -dbg package; the same modules' split .BTF from the image package over the 6.1 vmlinux
BTF.  Oracles: pahole (DWARF, and BTF with --btf_base), pfunct + nm, the kernel's own DB.
The sweep over all 1121 modules of the package is bench/bench_kobuild.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from dbhive import model as M
from dbhive import store
from resolver import Resolver
from resolver.errors import NoSuchType
from scripts.realdata import DEBIAN_IMAGE_PKG, DEBIAN_RELEASE, deb_members, fetch_deb
from tests.support.db_dump import dump_tables
from tests.support.pahole_compare import compare_with_pahole, oracle_view, pahole_view
from tests.support.pahole_oracle import pahole_layouts
from tests.support.pfunct_oracle import check_functions, our_prototypes

pytestmark = pytest.mark.slow

BIN = os.path.dirname(sys.executable)
MODULES = {"isofs": "fs/isofs/isofs.ko", "virtio_net": "drivers/net/virtio_net.ko",
           "mpls_router": "net/mpls/mpls_router.ko", "dummy": "drivers/net/dummy.ko"}
DBG_DIR = f"/usr/lib/debug/lib/modules/{DEBIAN_RELEASE}/kernel/"
IMAGE_DIR = f"/lib/modules/{DEBIAN_RELEASE}/kernel/"


def _extract(deb: str, prefix: str, label: str) -> dict:
    paths = deb_members(deb, [prefix + p for p in MODULES.values()], label)
    return {name: paths[prefix + p] for name, p in MODULES.items()}


@pytest.fixture(scope="session")
def dbg_kos(debian_dbg_deb) -> dict:
    """{module: .ko with DWARF} from the -dbg package (dpkg-deb | tar, one pass)."""
    return _extract(debian_dbg_deb, DBG_DIR, "kobuild/dbg-modules")


@pytest.fixture(scope="session")
def image_kos() -> dict:
    """{module: .ko without DWARF, with split .BTF} from the image package."""
    return _extract(fetch_deb(DEBIAN_IMAGE_PKG), IMAGE_DIR, "kobuild/image-modules")


def run(tool, *args, **kw):
    p = subprocess.run([os.path.join(BIN, tool), *args], capture_output=True, text=True, **kw)
    assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def distro_db(dbg_kos, tmp_path_factory) -> str:
    from scripts.make_kobuild_modules import compressed
    d = tmp_path_factory.mktemp("distro")
    (d / "ko").mkdir()
    for name, ko in dbg_kos.items():
        if name == "dummy":
            compressed(ko, str(d / "ko"), ("xz",))
        else:
            shutil.copy(ko, d / "ko")
    run("kobuild", str(d / "ko"), "-o", str(d / "distro.db"))
    return str(d / "distro.db")


def test_distro_modules_equal_pahole_and_pfunct(distro_db, dbg_kos):
    g = store.load_graph(distro_db)
    for name, ko in dbg_kos.items():
        result = compare_with_pahole(g, pahole_layouts(ko, "dwarf"))
        assert result["problems"] == [], name
        assert result["checked"] >= 300, name
        assert check_functions(g, ko, name) == [], name
    mods = {m["name"]: m for m in json.loads(store.read_meta(distro_db)["modules"])}
    assert set(mods) == set(MODULES)
    assert mods["dummy"]["file"] == "dummy.ko.xz"
    assert all(m["vermagic"].startswith(DEBIAN_RELEASE + " ") for m in mods.values())
    assert mods["isofs"]["functions"] == sum(1 for f in g.functions if f.module == "isofs") > 30


def test_kernel_struct_reaches_module_struct(distro_db, debian_db, debian_vmlinux_btf,
                                             dbg_kos):
    """`net_device.mpls_ptr` is a `struct mpls_dev *` the kernel only declares; the overlay
    brings mpls_router's layout."""
    kernel_lay = pahole_layouts(debian_vmlinux_btf, "btf")
    assert "struct mpls_dev" not in kernel_lay
    mod_lay = pahole_layouts(dbg_kos["mpls_router"], "dwarf")["struct mpls_dev"][0]
    with Resolver.open(db=debian_db, overlay=distro_db) as r:
        o = r.offset("net_device->mpls_ptr->sysctl")
        assert o.hops[0].offset == kernel_lay["struct net_device"][0].member("mpls_ptr").offset
        sysctl = mod_lay.member("sysctl")
        assert (o.offset, o.size) == (sysctl.offset, sysctl.size)
        back = r.offset("net_device->mpls_ptr->dev->mtu")
        assert back.offset == kernel_lay["struct net_device"][0].member("mtu").offset
        f, = r.func("mpls_forward")
        assert f.module == "mpls_router"
        assert [p.type for p in f.params] == ["struct sk_buff *", "struct net_device *",
                                              "struct packet_type *", "struct net_device *"]
    with Resolver.open(db=debian_db, overlay=None) as k:
        with pytest.raises(NoSuchType, match="mpls_dev"):
            k.offset("net_device->mpls_ptr->sysctl")


def _flat_dims(view):
    """BTF (pahole's encoder) flattens multi-dimensional arrays: compare [2][3] as [6]."""
    out = []
    for (path, off, size, bits, width, dims) in view:
        if len(dims) > 1:
            n = 1
            for x in dims:
                n *= x
            dims = [n]
        out.append((path, off, size, bits, width, tuple(dims)))
    return tuple(out)


def _layouts(g) -> dict:
    out: dict = {}
    for tid, t in g.named(M.COMPOSITE):
        if t.size is not None:
            out.setdefault(f"{t.kind} {t.name}", set()).add((t.size,
                                                              _flat_dims(pahole_view(g, tid))))
    return out


def test_split_btf_equals_dwarf(image_kos, dbg_kos, distro_db, debian_vmlinux_btf, tmp_path):
    """kobuild --base-btf on the image package's modules (no DWARF) gives the same layouts
    and prototypes as the -dbg modules' DWARF, and what pahole reads from the split BTF."""
    d = tmp_path / "img"
    d.mkdir()
    for ko in image_kos.values():
        shutil.copy(ko, d)
    out = str(tmp_path / "btf.db")
    run("kobuild", str(d), "--base-btf", debian_vmlinux_btf, "-o", out)
    meta = store.read_meta(out)
    assert (meta["type_source"], meta["module_count"]) == ("btf", "4")
    gb, gd = store.load_graph(out), store.load_graph(distro_db)
    ours, dwarf = _layouts(gb), _layouts(gd)
    base = {k: {(lay.size, _flat_dims(oracle_view(lay))) for lay in v}
            for k, v in pahole_layouts(debian_vmlinux_btf, "btf").items()}
    checked = 0
    for name, ko in image_kos.items():
        split = pahole_layouts(ko, "btf", ["--btf_base", debian_vmlinux_btf])
        for key, lays in split.items():
            for lay in lays:
                want = (lay.size, _flat_dims(oracle_view(lay)))
                if want in base.get(key, ()):
                    continue                         # the kernel's type: not the module's
                assert want in ours.get(key, ()), (name, key)
                assert want in dwarf.get(key, ()), (name, key)     # and the DWARF agrees
                checked += 1
    assert checked >= 50
    for key, lays in ours.items():            # nothing in ours that the DWARF lacks
        assert lays <= dwarf.get(key, set()), key
    for name in MODULES:                      # BTF FUNCs: prototypes the DWARF has
        fb, fd = our_prototypes(gb, name), our_prototypes(gd, name)
        assert len(fb) >= 0.9 * len(fd) > 5, name
        assert {n: p for n, p in fb.items() if not p <= fd.get(n, set())} == {}, name


def test_raw_split_btf_and_wrong_bases(image_kos, debian_vmlinux_btf, running_btf, tmp_path):
    """A module's raw split BTF (what /sys/kernel/btf/<module> holds) reads like its .ko;
    without its base, or over another kernel's BTF, it is refused."""
    from dbhive.btf import read_btf
    from dbhive.errors import BtfError
    ko = image_kos["mpls_router"]
    raw = str(tmp_path / "mpls_router")
    subprocess.run(["objcopy", "--dump-section", f".BTF={raw}", ko, str(tmp_path / "scratch")],
                   check=True)
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    run("kobuild", ko, "--base-btf", debian_vmlinux_btf, "-o", a)
    run("kobuild", raw, "--base-btf", debian_vmlinux_btf, "-o", b)
    assert dump_tables(a) == dump_tables(b)
    with open(raw, "rb") as fh:
        with pytest.raises(BtfError, match="outside the string section|which is not a type"):
            read_btf(fh.read(), raw)
    for args, message in (([raw], "raw BTF, not a module with DWARF"),
                          ([ko, "--base-btf", running_btf], "but the base BTF")):
        p = subprocess.run([os.path.join(BIN, "kobuild"), *args, "-o", str(tmp_path / "c.db")],
                           capture_output=True, text=True)
        assert p.returncode == 1 and message in p.stderr, p.stderr
        assert "Traceback" not in p.stderr and not os.path.exists(tmp_path / "c.db")


def test_crafted_split_btf(image_kos, debian_vmlinux_btf, tmp_path):
    """A split BTF whose pointer points to itself, or past every type, is a one-line error
    naming the type id, within bounded time and memory."""
    from dbhive.btf import kinds as K
    from scripts.make_hostile_inputs import Btf
    from tests.support.bounded import run_bounded
    ko = image_kos["isofs"]
    raw = str(tmp_path / "isofs")
    subprocess.run(["objcopy", "--dump-section", f".BTF={raw}", ko, str(tmp_path / "scratch")],
                   check=True)
    with open(debian_vmlinux_btf, "rb") as fh:
        base_count = len(Btf(fh.read()).records)          # the split's ids start here
    with open(raw, "rb") as fh:
        split = Btf(fh.read())
    local = split.ids(K.PTR)[0]
    for name, ref, message in (("self", base_count - 1 + local, "is spelled through itself"),
                               ("dangling", base_count + 10 ** 6, "not a type")):
        bad = Btf(bytes(split.data))
        bad.set_ref(local, ref)
        path = str(tmp_path / f"isofs-{name}")
        with open(path, "wb") as fh:
            fh.write(bytes(bad.data))
        out = str(tmp_path / f"{name}.db")
        o = run_bounded([os.path.join(BIN, "kobuild"), path, "--base-btf", debian_vmlinux_btf,
                         "-o", out], timeout=60, max_data_mb=1024)
        assert o.one_line_error and o.returncode == 1, o.stderr
        assert message in o.stderr and "type id" in o.stderr, o.stderr
        assert not os.path.exists(out)


NO_NETWORK = ("import errno, socket, sys\n"
              "s = socket.socket()\n"
              "try:\n"
              "    s.connect(('1.1.1.1', 80))\n"
              "except OSError as e:\n"
              "    sys.exit(0 if e.errno == errno.ENETUNREACH else 1)\n"
              "sys.exit(1)\n")


def _offline(*argv, **kw):
    """Run with the network unreachable (a new network namespace: only a loopback that is
    down); the command runs only once a connection attempt has failed as unreachable."""
    return subprocess.run(["unshare", "-n", "sh", "-c", '"$0" -c "$1" && shift && exec "$@"',
                           sys.executable, NO_NETWORK, *argv],
                          capture_output=True, text=True, **kw)


def test_dbhive_build_modules_offline(debian_dbg_deb, dbg_kos, debian_db, debian_vmlinux_btf,
                                     tmp_path):
    out = str(tmp_path / "k.db")
    p = _offline(os.path.join(BIN, "dbhive"), "build", debian_dbg_deb, "--modules",
                 "isofs,virtio-net,mpls_router", "--out", out, "--json")
    assert p.returncode == 0, p.stderr
    meta = json.loads(p.stdout)["meta"]
    assert meta["release"] == DEBIAN_RELEASE and meta["type_source"] == "dwarf"
    mods = json.loads(meta["modules"])                  # in package member order
    assert [m["name"] for m in mods] == ["virtio_net", "isofs", "mpls_router"]
    assert mods[1]["file"] == DBG_DIR.lstrip("/") + "fs/isofs/isofs.ko"
    assert meta["module_count"] == 3
    g = store.load_graph(out)
    for name in ("isofs", "virtio_net", "mpls_router"):
        ko = dbg_kos[name]
        result = compare_with_pahole(g, pahole_layouts(ko, "dwarf"))
        assert result["problems"] == [] and result["checked"] >= 300, name
        assert check_functions(g, ko, name) == [], name
    modules = {f.module for f in g.functions}
    assert modules == {"vm", "isofs", "virtio_net", "mpls_router"}
    # one DB: the kernel's pointer now reaches the module's layout, no overlay needed
    # (the kernel's hop by pahole on the 6.1 BTF, the module's by pahole on mpls_router.ko)
    mpls_ptr = pahole_layouts(debian_vmlinux_btf, "btf")["struct net_device"][0].member("mpls_ptr")
    sysctl = pahole_layouts(dbg_kos["mpls_router"], "dwarf")["struct mpls_dev"][0].member("sysctl")
    assert mpls_ptr.type == "struct mpls_dev *"
    with Resolver.open(db=out, overlay=None) as r, Resolver.open(db=debian_db, overlay=None) as k:
        hop = r.offset("net_device->mpls_ptr->sysctl")
        assert [(h.offset, h.size) for h in hop.hops] == [(mpls_ptr.offset, mpls_ptr.size),
                                                          (sysctl.offset, sysctl.size)]
        for path in ("task_struct.pid", "sk_buff.len", "net_device.mpls_ptr"):
            assert r.offset(path).offset == k.offset(path).offset


def test_build_modules_errors(debian_vmlinux, tmp_path):
    from dbhive.errors import BuildError
    from dbhive.modules import extract_package_modules
    from tests.support.rpms import make_rpms
    rpm = make_rpms("small")["small.xz"].replace("kernel-debuginfo", "kernel-modules-debuginfo")
    work = tmp_path / "work"
    work.mkdir()
    got = extract_package_modules(rpm, str(work), ["crc32c-intel"])
    assert [e.name for e in got] == ["crc32c_intel"]
    os.unlink(got[0].path)
    with pytest.raises(BuildError, match="no module no_such_module in this package"):
        extract_package_modules(rpm, str(work), ["crc32c_intel", "no-such-module"])
    assert not os.listdir(work)
    out = str(tmp_path / "x.db")
    p = subprocess.run([os.path.join(BIN, "dbhive"), "build", debian_vmlinux, "--modules", "all",
                        "--out", out], capture_output=True, text=True)
    assert p.returncode == 1 and "--modules needs a package" in p.stderr
    assert "Traceback" not in p.stderr and not os.path.exists(out)
    p = subprocess.run([os.path.join(BIN, "dbhive"), "build", debian_vmlinux, "--modules", ",",
                        "--out", out], capture_output=True, text=True)
    assert p.returncode == 2 and "--modules" in p.stderr
