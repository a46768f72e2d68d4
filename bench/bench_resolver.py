#!/usr/bin/env python3
"""Resolver speed, in one run, against the real surftrace 0.7.16 client's local mode on the
same DB.

    .venv/bin/python -m bench.bench_resolver [--db FILE] [--json]

Without --db, the DB of the running kernel is built from /sys/kernel/btf/vmlinux into a
temporary directory first (not timed).

Measured (medians and p90 over many calls, microseconds per member path):
  ours warm       Resolver.offset(path) on an open resolver (what the tracer calls in a loop;
                  repeated paths are answered from its result cache)
  ours walk       the same lookup with the result cache bypassed: parse + walk the kt_*
                  tables (type/member rows cached after first use)
  client          surftrace's own offset primitive, Cfxpr.showMemberOffset(member, struct)
                  through CdbParser (local mode): one struct query + one member query per hop
                  (its expression translator calls this; it fetches the struct twice per step)
  expr            translating the contract's four expressions: our translate() vs the client's
                  Cfxpr.expr() on the same DB
  open+first      opening the DB and answering the first query (fresh process state is not
                  possible in-process; a new connection and empty caches each time)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

PATHS = [
    "task_struct.files", "files_struct.fdt", "fdtable.fd", "file.private_data", "file.f_pos",
    "file.f_op", "file.f_inode", "file_operations.read_iter", "inode.i_mode", "inode.i_sb",
    "super_block.s_dev", "file.f_path.dentry", "dentry.d_name.name", "dentry.d_parent",
    "socket.sk", "socket.file", "sock.__sk_common.skc_family", "sock.__sk_common.skc_daddr",
    "sock.__sk_common.skc_dport", "sock.__sk_common.skc_state",
    "sock.__sk_common.skc_ipv6only", "tcp_sock.copied_seq", "tcp_sock.write_seq",
    "mount.mnt_ns", "mnt_namespace.ns.inum", "task_struct.comm[3]", "task_struct.se.vruntime",
    "sk_buff.data", "iphdr.protocol", "task_struct->files->fdt",
]
CONTRACT = [
    "p wake_up_new_task comm=%0->comm",
    "p wake_up_new_task uesrs=S%0->mm->mm_users",
    "p do_filp_open+121 pos=X!(struct file*)%ax->f_pos",
    "p __netif_receive_skb_core proto=@(struct iphdr *)l3%0->protocol",
]


def _stats(ns: list) -> dict:
    ns = sorted(ns)
    return {"median_us": statistics.median(ns) / 1e3,
            "p90_us": ns[int(len(ns) * 0.9)] / 1e3, "n": len(ns)}


def build_running_db(dest: str) -> str:
    from dbhive import btf, store
    from resolver.choose import running_identity
    ident = running_identity()
    with open("/sys/kernel/btf/vmlinux", "rb") as fh:
        g = btf.read_btf(fh.read())
    store.write_db(g, {"release": ident.release, "arch": ident.arch,
                       "build_id": ident.build_id or "", "flavour": "normal",
                       "type_source": "btf"}, dest)
    return dest


def client_hops(path: str) -> list:
    """(struct name, flattened member) per hop, the way surftrace asks for an offset."""
    from resolver.paths import parse_path
    mp = parse_path(path)
    hops = mp.hops()
    out = []
    root = mp.root
    for i, hop in enumerate(hops):
        member = ".".join(s.text() for s in hop)
        out.append((root, member))
        root = None
    return out


def bench(db: str, rounds: int) -> dict:
    from resolver import Resolver
    from resolver.paths import parse_path
    from resolver.expr import translate

    old_cwd = os.getcwd()
    os.chdir(tempfile.mkdtemp())              # no ./prev.db for either side
    os.environ.pop("LBC_PREVDB", None)
    try:
        from surftrace.dbParser import CdbParser
        from surftrace.fxpr import Cfxpr
        from surftrace.regSplit import spiltInputLine

        r = Resolver.open(db=db, overlay=None)
        # hop structs for the client (the pointee of each '->' from our own answer)
        plans = {}
        for p in PATHS:
            hops = client_hops(p)
            names = []
            root = hops[0][0]
            names.append(("struct " + root, hops[0][1]))
            if len(hops) > 1:
                o = r.offset(p)
                for (h, prev) in zip(hops[1:], o.hops[:-1]):
                    names.append((prev.type.rstrip(" *"), h[1]))
            plans[p] = names

        # ---- ours, warm
        for p in PATHS:
            r.offset(p)
        warm = []
        for _ in range(rounds):
            for p in PATHS:
                t = time.perf_counter_ns()
                r.offset(p)
                warm.append(time.perf_counter_ns() - t)
        # ---- ours, walking every time (result cache bypassed)
        walk = []
        for _ in range(max(1, rounds // 2)):
            for p in PATHS:
                t = time.perf_counter_ns()
                r._offset(parse_path(p))
                walk.append(time.perf_counter_ns() - t)
        # ---- the client, local mode on the same DB
        parser = CdbParser(db)
        fx = Cfxpr(parser, "x86_64")
        client = []
        crounds = max(1, rounds // 10)
        mismatches = []
        for i in range(crounds):
            for p in PATHS:
                t = time.perf_counter_ns()
                offs = [fx.showMemberOffset(member, sname) for (sname, member) in plans[p]]
                client.append(time.perf_counter_ns() - t)
                if i == 0:
                    ours = r.offset(p)
                    mine = [h.offset for h in ours.hops] if ours.hops else [ours.offset]
                    if offs != mine:
                        mismatches.append((p, offs, mine))
        # ---- expressions
        our_expr, their_expr = [], []
        for _ in range(max(1, rounds // 10)):
            t = time.perf_counter_ns()
            translate(r, CONTRACT, compat=True)
            our_expr.append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            for i, line in enumerate(CONTRACT):
                res = spiltInputLine(line)
                func = res["symbol"].split("+", 1)[0]
                Cfxpr(parser, "x86_64").expr(func, "+" in res["symbol"], res["symbol"], res)
            their_expr.append(time.perf_counter_ns() - t)
        # ---- open + first query
        opens = []
        for _ in range(30):
            t = time.perf_counter_ns()
            r2 = Resolver.open(db=db, overlay=None)
            r2.offset("task_struct.files")
            opens.append(time.perf_counter_ns() - t)
            r2.close()
        copens = []
        for _ in range(30):
            t = time.perf_counter_ns()
            p2 = CdbParser(db)
            Cfxpr(p2, "x86_64").showMemberOffset("files", "struct task_struct")
            copens.append(time.perf_counter_ns() - t)
        r.close()
    finally:
        os.chdir(old_cwd)
    res = {"db": db, "paths": len(PATHS), "ours_warm": _stats(warm), "ours_walk": _stats(walk),
           "client": _stats(client), "ours_expr4": _stats(our_expr),
           "client_expr4": _stats(their_expr), "ours_open_first": _stats(opens),
           "client_open_first": _stats(copens), "offset_mismatches": mismatches}
    res["ratio_warm"] = res["client"]["median_us"] / res["ours_warm"]["median_us"]
    res["ratio_walk"] = res["client"]["median_us"] / res["ours_walk"]["median_us"]
    res["ratio_expr"] = res["client_expr4"]["median_us"] / res["ours_expr4"]["median_us"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", help="DB file (default: build the running kernel's from its BTF)")
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    db = a.db
    tmp = None
    if not db:
        tmp = tempfile.mkdtemp(prefix="bench-resolver-")
        db = build_running_db(os.path.join(tmp, "running.db"))
    res = bench(db, a.rounds)
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"DB: {res['db']}  ({res['paths']} member paths)")
        print(f"{'measure':<40} {'median µs':>10} {'p90 µs':>10} {'calls':>8}")
        for key, label in (("ours_warm", "ours: offset(), warm"),
                           ("ours_walk", "ours: offset() walk, result cache off"),
                           ("client", "surftrace client local: showMemberOffset"),
                           ("ours_expr4", "ours: translate 4 contract exprs"),
                           ("client_expr4", "surftrace client: Cfxpr.expr x4"),
                           ("ours_open_first", "ours: open DB + first offset"),
                           ("client_open_first", "client: open DB + first offset")):
            s = res[key]
            print(f"{label:<40} {s['median_us']:>10.1f} {s['p90_us']:>10.1f} {s['n']:>8}")
        print(f"ratio client/ours: warm {res['ratio_warm']:.0f}x, walk "
              f"{res['ratio_walk']:.1f}x, expressions {res['ratio_expr']:.1f}x")
        if res["offset_mismatches"]:
            print("OFFSET MISMATCHES:", res["offset_mismatches"])
    if tmp:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if res["offset_mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
