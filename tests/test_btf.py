"""BTF reader: every record of real kernels' BTF against bpftool's own dump."""
from __future__ import annotations

import pytest

from dbhive import btf
from dbhive import model as M

from tests.support.bpftool_oracle import bpftool_dump
from tests.support import need_tool

NOT_TYPES = {"FUNC", "VAR", "DATASEC", "DECL_TAG"}
KIND = {"INT": M.INT, "PTR": M.PTR, "ARRAY": M.ARRAY, "STRUCT": M.STRUCT, "UNION": M.UNION,
        "ENUM": M.ENUM, "ENUM64": M.ENUM, "FWD": M.FWD, "TYPEDEF": M.TYPEDEF,
        "VOLATILE": M.VOLATILE, "CONST": M.CONST, "RESTRICT": M.RESTRICT,
        "FUNC_PROTO": M.FUNC_PROTO, "FLOAT": M.FLOAT, "TYPE_TAG": M.TYPE_TAG}


def _int(text: str) -> int:
    return int(text.rstrip("LU"))


def check_against_bpftool(g: M.TypeGraph, path: str) -> int:
    """Compare every BTF record bpftool prints with our graph; returns records checked."""
    records = bpftool_dump(path)
    idmap = {0: 0}
    for r in records:
        if r.kind not in NOT_TYPES:
            idmap[r.id] = len(idmap)
    assert len(g.types) == len(idmap)
    funcs = iter(g.functions)
    by_id = {r.id: r for r in records}
    for r in records:
        a = r.attrs
        if r.kind == "FUNC":
            f = next(funcs)
            assert (f.name, f.proto, f.static) == (
                r.name, idmap[int(a["type_id"])], a["linkage"] == "static"), r
            continue
        if r.kind in NOT_TYPES:
            continue
        t = g.types[idmap[r.id]]
        where = f"[{r.id}] {r.kind} {r.name}"
        assert t.kind == KIND[r.kind], where
        assert t.name == (r.name if r.kind not in ("ARRAY", "FUNC_PROTO") else None), where
        if "size" in a:
            assert t.size == int(a["size"]), where
        if r.kind in ("PTR", "TYPEDEF", "VOLATILE", "CONST", "RESTRICT", "TYPE_TAG"):
            assert t.ref == idmap[int(a["type_id"])], where
        elif r.kind == "ARRAY":
            assert (t.ref, t.nelems) == (idmap[int(a["type_id"])], int(a["nr_elems"])), where
        elif r.kind == "INT":
            enc = a["encoding"]
            assert t.signed == (enc == "SIGNED"), where
            assert t.encoding == {"SIGNED": "signed", "CHAR": "char", "BOOL": "bool",
                                  "(none)": "unsigned"}[enc], where
        elif r.kind == "FWD":
            assert t.encoding == a["fwd_kind"], where
        elif r.kind in ("STRUCT", "UNION"):
            ours = [(m.name, m.type, m.bit_offset, m.bit_size) for m in t.members]
            theirs = []
            for name, ma in r.items:
                bits = int(ma.get("bitfield_size", 0))
                off = int(ma["bits_offset"])
                target = by_id.get(int(ma["type_id"]))
                if not bits and target is not None and target.kind == "INT" and \
                        int(target.attrs["nr_bits"]) != 8 * int(target.attrs["size"]):
                    bits = int(target.attrs["nr_bits"])          # legacy bitfield encoding
                    off += int(target.attrs["bits_offset"])
                theirs.append((name, idmap[int(ma["type_id"])], off, bits))
            assert ours == theirs, where
        elif r.kind in ("ENUM", "ENUM64"):
            assert t.enumerators == [(n, _int(ma["val"])) for n, ma in r.items], where
            assert t.signed == (a["encoding"] == "SIGNED"), where
        elif r.kind == "FUNC_PROTO":
            assert t.ref == idmap[int(a["ret_type_id"])], where
            items = list(r.items)
            variadic = bool(items) and items[-1][0] is None and items[-1][1]["type_id"] == "0"
            if variadic:
                items = items[:-1]
            assert t.variadic == variadic, where
            assert [(p.name, p.type) for p in t.params] == \
                [(n, idmap[int(pa["type_id"])]) for n, pa in items], where
    assert next(funcs, None) is None
    return len(records)


def test_running_kernel_btf_matches_bpftool(running_btf):
    need_tool("bpftool")
    with open(running_btf, "rb") as fh:
        g = btf.read_btf(fh.read(), running_btf)
    assert check_against_bpftool(g, running_btf) > 50000
    names = {t.name for _, t in g.named()}
    assert {"task_struct", "sock", "file", "sk_buff"} <= names


def test_debian_vmlinux_btf_section_matches_bpftool(debian_vmlinux_btf):
    need_tool("bpftool")
    with open(debian_vmlinux_btf, "rb") as fh:
        g = btf.read_btf(fh.read(), debian_vmlinux_btf)
    assert check_against_bpftool(g, debian_vmlinux_btf) > 50000


@pytest.mark.parametrize("damage", ["truncate-header", "truncate-types", "bad-magic",
                                    "bad-version", "string-offset"])
def test_damaged_btf_is_a_clear_error(running_btf, damage):
    with open(running_btf, "rb") as fh:
        data = bytearray(fh.read())
    if damage == "truncate-header":
        data = data[:10]
    elif damage == "truncate-types":
        data = data[:len(data) // 3]
    elif damage == "bad-magic":
        data[0:2] = b"\x00\x00"
    elif damage == "bad-version":
        data[2] = 7
    elif damage == "string-offset":
        # first type record's name offset pointed far past the string section
        hdr_len = int.from_bytes(data[4:8], "little")
        type_off = int.from_bytes(data[8:12], "little")
        data[hdr_len + type_off:hdr_len + type_off + 4] = (0x7FFFFFF0).to_bytes(4, "little")
    with pytest.raises(btf.BtfError) as info:
        btf.read_btf(bytes(data), "damaged.btf")
    assert "damaged.btf" in str(info.value)
