"""`tracer vm-verify`: the tracer's proof, run inside the booted kernel a DB was built for.

One boot runs, inside the guest (the kernel's BTF ignored, as on a kernel without it):

* `identity`     uname, the build-id of /sys/kernel/notes, the guest's own BTF (size, sha256)
* `verify`       `tracer verify --ignore-btf` against the DB (the hive's, chosen by build-id
                 exactly as on a real machine, or --db), with the Go test program when given
* `offsets-db`   `tracer offsets --ignore-btf`: what the DB puts in members_offset
* `offsets-btf`  `tracer offsets` from the guest's own /sys/kernel/btf/vmlinux

and the host prints the same PASS/FAIL table as `tracer verify`, then whether the guest's
BTF gives identical offsets.  `plan()` returns the job so callers (the tests) can add their
own steps to the same boot; `report()` reads the results back.
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from typing import Optional

from dbhive.errors import NoKernelDB

from . import VMError
from .kernel import Kernel
from .qemu import Job, Run

STEPS = ("identity", "verify", "offsets-db", "offsets-btf")
VERIFY_EVENT_TIMEOUT = 30       # tracer verify --timeout: generous under TCG


class NoDB(NoKernelDB):
    """No DB for the booted kernel (exit 3, as the resolver's)."""


@dataclass
class Plan:
    job: Job
    kernel: Kernel
    db_label: str                  # what was given: hive DIR (N DBs) or the DB file
    source_args: str               # the tracer's source options inside the guest
    dbs: list = field(default_factory=list)     # host paths of the DBs sent
    prefix: str = ""               # of the step names (several plans can share one boot)
    reuse: Optional["Plan"] = None  # the plan whose identity and BTF steps this one shares

    def step(self, name: str) -> str:
        if self.reuse is not None and name in ("identity", "offsets-btf"):
            return self.reuse.step(name)
        return self.prefix + name


def hive_dbs(hive: str, release: str) -> list:
    """(path, path relative to the hive) of the hive's DBs for RELEASE (every build of it:
    the guest's tracer picks among them by build-id)."""
    from dbhive.hive import iter_dbs
    from resolver.choose import read_meta
    if not os.path.isdir(hive):
        raise NoDB(f"no such hive directory: {hive}")
    out = []
    for e in iter_dbs(hive):
        meta = read_meta(e.path)
        if meta and meta.get("release") == release:
            out.append((e.path, os.path.relpath(e.path, hive)))
    return out


def build_missing_db(kernel: Kernel, hive: str, cache: Optional[str], progress=None,
                     offline: bool = False) -> str:
    """Fetch the kernel's -dbg package (cached; with `offline` only from the cache) and build
    its DB from DWARF into the hive."""
    from dbhive.build import build
    from .debs import Apt
    from .kernel import get_deb
    if not kernel.dbg_package:
        raise NoDB(f"no debuginfo package is known for {kernel.release}: build its DB with "
                   f"`dbhive build <vmlinux or -dbg package> --hive {hive}`")
    deb = get_deb(Apt(cache), kernel.dbg_package, None, offline)
    if progress:
        progress(f"building the DB of {kernel.release} from {os.path.basename(deb)} (DWARF)")
    return build(deb, hive=hive, distro="debian", source="dwarf", progress=False).db


def plan(kernel: Kernel, *, hive: Optional[str] = None, db: Optional[str] = None,
         go_probe: Optional[str] = None, build_missing: bool = False,
         cache: Optional[str] = None, progress=None, job: Optional[Job] = None,
         offline: bool = False,
         prefix: str = "", reuse: Optional[Plan] = None) -> Plan:
    """The steps of vm-verify, added to JOB (a new one by default), their names prefixed
    with PREFIX.  With REUSE (a plan already in JOB), its identity and guest-BTF steps are
    shared instead of run again."""
    if bool(hive) == bool(db):
        raise VMError("give --hive DIR or --db FILE (one of them)")
    job = job if job is not None else Job()
    if db:
        if not os.path.isfile(db):
            raise NoDB(f"no such DB file: {db}")
        rel = f"{prefix}db/{os.path.basename(db)}"
        job.add_file(rel, os.path.abspath(db), 0o644)
        source_args, label, sent = f"--db /job/{shlex.quote(rel)}", db, [db]
    else:
        found = hive_dbs(hive, kernel.release)
        if not found and build_missing:
            build_missing_db(kernel, hive, cache, progress, offline)
            found = hive_dbs(hive, kernel.release)
        if not found:
            hint = (f"; add --build-missing to build it from {kernel.dbg_package}"
                    if kernel.dbg_package else "")
            raise NoDB(f"hive {hive} has no DB for {kernel.release}: build one with "
                       f"`dbhive build <its -dbg package or vmlinux> --hive {hive}`{hint}")
        for path, rel in found:
            job.add_file(f"hive/{rel}", path, 0o644)
        source_args = "--hive /job/hive"
        label = f"hive {hive} ({len(found)} DB{'s' if len(found) > 1 else ''} for {kernel.release})"
        sent = [p for p, _ in found]
    go_arg = ""
    if go_probe:
        if not (os.path.isfile(go_probe) and os.access(go_probe, os.X_OK)):
            raise VMError(f"--go-probe {go_probe}: not an executable file")
        job.add_file("go-probe", os.path.abspath(go_probe), 0o755)
        go_arg = " --go-probe /job/go-probe"
    if reuse is None:
        job.add_step(prefix + "identity", "python3 -m tracer.vm.guest.identity", timeout=120)
    job.add_step(prefix + "verify", f"tracer verify --ignore-btf {source_args}{go_arg} "
                                    f"--timeout {VERIFY_EVENT_TIMEOUT} --json", timeout=900)
    job.add_step(prefix + "offsets-db", f"tracer offsets --ignore-btf {source_args} --json",
                 timeout=300)
    if reuse is None:
        job.add_step(prefix + "offsets-btf", "[ -e /sys/kernel/btf/vmlinux ] || exit 0\n"
                                             "tracer offsets --json", timeout=300)
    return Plan(job, kernel, label, source_args, sent, prefix, reuse)


def _json_step(run: Run, name: str) -> Optional[dict]:
    s = run.step(name)
    try:
        return json.loads(s.stdout) if s.stdout.strip() else None
    except json.JSONDecodeError:
        return None


def compare_offsets(db: dict, btf: dict) -> dict:
    """Field by field: does the guest's BTF give what the DB gives (value, bit, width, or
    absent in both)?"""
    def shape(f: dict):
        if "value" not in f:
            return ("absent",)
        return (f["value"], f.get("bit"), f.get("width"))
    by_btf = {f["field"]: f for f in btf.get("fields", [])}
    diffs, same = [], 0
    for f in db.get("fields", []):
        b = by_btf.pop(f["field"], None)
        if b is not None and shape(b) == shape(f):
            same += 1
        else:
            diffs.append({"field": f["field"], "db": f.get("value", "absent"),
                          "btf": "missing" if b is None else b.get("value", "absent")})
    for name, b in by_btf.items():
        diffs.append({"field": name, "db": "missing", "btf": b.get("value", "absent")})
    return {"identical": not diffs, "fields": same + len(diffs), "same": same,
            "differences": diffs}


@dataclass
class Report:
    kernel: dict
    accel: str
    db: str
    verify: Optional[dict]
    btf: dict
    timings: dict
    errors: list

    @property
    def ok(self) -> bool:
        return (not self.errors and bool(self.verify) and self.verify.get("ok") is True
                and self.btf.get("identical") is not False)

    def as_dict(self) -> dict:
        return {"kernel": self.kernel, "accel": self.accel, "db": self.db,
                "verify": self.verify, "btf": self.btf, "timings": self.timings,
                "errors": self.errors, "ok": self.ok}

    def text(self) -> str:
        from tracer.verify import Check, Result, format_table
        lines = []
        k = self.kernel
        lines.append(f"kernel {k.get('release')} (build-id {k.get('build_id') or '-'}) from "
                     f"{k.get('source')}, booted under {self.accel.upper()} in "
                     f"{self.timings.get('to_userspace')} s")
        if self.verify:
            v = self.verify
            res = Result(v["kernel"], v["source"], v.get("origin", v["source"]),
                         [Check(c["field"], c["expected"], c["read"], c["ok"],
                                c.get("note", "")) for c in v["checks"]],
                         v.get("skipped", []), v.get("warnings", []), v.get("timings", {}))
            for w in res.warnings:
                lines.append(f"warning: {w}")
            lines.append(format_table(res))
        b = self.btf
        if b.get("available") is False:
            lines.append(f"guest BTF: none ({b.get('why', 'the kernel exposes none')})")
        elif b.get("identical"):
            lines.append(f"guest BTF ({b['path']}): identical offsets, {b['same']}/"
                         f"{b['fields']} members_offset fields")
        elif "differences" in b:
            lines.append(f"guest BTF ({b['path']}): DIFFERENT from the DB in "
                         f"{len(b['differences'])} of {b['fields']} fields:")
            for d in b["differences"]:
                lines.append(f"  {d['field']}: db {d['db']}, btf {d['btf']}")
        for e in self.errors:
            lines.append(f"error: {e}")
        lines.append(("OK" if self.ok else "FAILED") + f": {k.get('release')} with {self.db}")
        return "\n".join(lines)


def report(p: Plan, run: Run) -> Report:
    ident = _json_step(run, p.step("identity")) or {}
    errors = []
    kernel = {"release": ident.get("release", run.guest.get("release")),
              "build_id": ident.get("build_id"), "source": p.kernel.source}
    verify = _json_step(run, p.step("verify"))
    vstep = run.step(p.step("verify"))
    if verify is None:
        errors.append(f"tracer verify gave no result (exit {vstep.rc}): "
                      f"{_last_line(vstep.stderr)}")
    btf: dict = {}
    if not ident.get("btf"):
        btf = {"available": False, "why": ident.get("btf_error", "no /sys/kernel/btf/vmlinux")}
    else:
        off_db = _json_step(run, p.step("offsets-db"))
        off_btf = _json_step(run, p.step("offsets-btf"))
        btf = {"available": True, "path": ident["btf"]["path"], "size": ident["btf"]["size"],
               "sha256": ident["btf"]["sha256"]}
        if off_db is None or off_btf is None:
            bad = p.step("offsets-db" if off_db is None else "offsets-btf")
            errors.append(f"tracer offsets ({bad}) gave no result: "
                          f"{_last_line(run.step(bad).stderr)}")
        else:
            if not off_btf.get("source", "").startswith("btf:"):
                errors.append(f"tracer offsets in the guest did not read its BTF "
                              f"(source {off_btf.get('source')})")
            btf.update(compare_offsets(off_db, off_btf))
    timings = {"to_userspace": run.timings.get("to_userspace"),
               "boot_total": run.timings.get("total"),
               **{f"{s}_step": run.step(p.step(s)).seconds for s in STEPS}}
    if verify:
        timings.update({f"verify_{k}": v for k, v in verify.get("timings", {}).items()})
    return Report(kernel, run.accel, p.db_label, verify, btf, timings, errors)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"

