"""In the guest: which DB the resolver picks for this kernel, and whether it agrees with the
kernel's own BTF.

    python3 -m tracer.vm.guest.layout_check --hive DIR [--db FILE] [PATH...]

The DB is chosen the way every tool chooses it on a machine without BTF (uname -r and the
GNU build-id of /sys/kernel/notes, matched against the hive), or given with --db; each member
path (default: every alternative path of the tracer's members_offset table) is then
resolved from that DB and from /sys/kernel/btf/vmlinux, independently.  Prints
one JSON object; exit 0 when every path gives the same answer from both (absent in both
counts as the same), 1 otherwise, 2 when there is nothing to compare.
"""
import argparse
import hashlib
import json
import sys

from resolver import Resolver, ResolverError
from resolver.choose import running_identity

BTF = "/sys/kernel/btf/vmlinux"


def numbers(d):
    """What must agree: offsets, sizes and bit positions (type spellings may differ between
    DWARF and BTF, e.g. a typedef kept by one and resolved by the other)."""
    if "absent" in d:
        return "absent"
    keep = {k: d.get(k) for k in ("offset", "size", "bit_offset", "bit_size")}
    if d.get("hops"):
        keep["hops"] = [numbers(h) for h in d["hops"]]
    return keep


def answer(r, path):
    try:
        return r.offset(path).as_dict()
    except ResolverError as e:
        return {"absent": str(e)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hive")
    ap.add_argument("--db")
    ap.add_argument("paths", nargs="*")
    a = ap.parse_args()
    if not a.paths:
        from tracer.fields import MEMBERS
        a.paths = sorted({p for m in MEMBERS for p in m.paths})
    ident = running_identity()
    out = {"identity": {"release": ident.release, "arch": ident.arch,
                        "build_id": ident.build_id}}
    try:
        with open(BTF, "rb") as fh:
            blob = fh.read()
        out["btf"] = {"path": BTF, "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    except OSError as e:
        out["btf"] = {"path": BTF, "error": str(e)}
    try:
        db = Resolver.open(db=a.db, hive=a.hive, overlay=None)
    except ResolverError as e:
        out["error"] = f"no DB: {e}"
        print(json.dumps(out, indent=1))
        return 2
    out["db"] = {"path": db.kernel["db"], "release": db.kernel["release"],
                 "build_id": db.kernel["build_id"], "warnings": list(db.warnings)}
    if "error" in out["btf"]:
        print(json.dumps(out, indent=1))
        return 2
    btf = Resolver.from_btf(BTF)
    rows = []
    for p in a.paths:
        d, b = answer(db, p), answer(btf, p)
        same = numbers(d) == numbers(b)
        rows.append({"path": p, "db": d, "btf": b, "same": same})
    out["rows"] = rows
    out["same"] = all(r["same"] for r in rows)
    print(json.dumps(out, indent=1))
    return 0 if out["same"] else 1


if __name__ == "__main__":
    sys.exit(main())
