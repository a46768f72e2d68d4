"""`dbhive batch` and `dbhive index` on a real mini-hive (tests/support/minihive.py): two real
Debian -dbg packages, a real RPM made by rpmbuild (the first kernel again), this machine's raw
BTF, a btfhub archive and a corrupt package.  Killed with SIGKILL in the middle and run again;
two shards against one run; the manifest against sha256sum and readelf."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from types import SimpleNamespace

import pytest

from dbhive.batch import records
from dbhive.batch.pack import shard_of
from scripts.realdata import DEBIAN_RELEASE
from tests.support import need_tool
from tests.support.minihive import (BTFHUB_DIR, BTFHUB_RELEASE, CORRUPT_NAME, DBHIVE,
                                    db_digest, db_files, dbhive, make_pack, merge_hives,
                                    normalized_index)

DEB47_DB = f"x86_64/db/debian/info-{DEBIAN_RELEASE}.db"
CORRUPT = f"x86_64/pack/debian/{CORRUPT_NAME}"


def second_db(inputs) -> str:
    """The DB of the mini-hive's second Debian kernel (chosen from the index at run time)."""
    return f"x86_64/db/debian/info-{inputs.release2}.db"


def pids_of_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def readelf_build_id(path: str) -> str:
    need_tool("readelf")
    out = subprocess.run(["readelf", "-n", path], check=True, capture_output=True,
                         text=True).stdout
    return out.split("Build ID:")[1].split()[0]


def sha256sum(path: str) -> str:
    return subprocess.run(["sha256sum", path], check=True, capture_output=True,
                          text=True).stdout.split()[0]


def by_package(run_json: dict) -> dict:
    return {p["package"]: p for p in run_json["packages"]}


# ----------------------------------------------------------------------------- kill -9 and resume

@pytest.fixture(scope="module")
def resumed(tmp_path_factory, batch_inputs):
    """Run 1 (--jobs 1, 2 DWARF processes: the build process reads one share, a forked worker
    the other) is killed with SIGKILL once the first Debian DB is written and the next
    package's DWARF worker runs; run 2 (--jobs 2) resumes."""
    top = tmp_path_factory.mktemp("batch")
    hive, scratch = str(top / "hive"), str(top / "scratch")
    os.makedirs(scratch)
    packages = make_pack(hive, batch_inputs)
    proc = subprocess.Popen([DBHIVE, "batch", "--hive", hive, "--jobs", "1", "--workers", "2",
                             "--scratch", scratch, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 1800
    tree = []
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"run 1 ended early: {proc.communicate()}"
        if os.path.exists(os.path.join(hive, DEB47_DB)):
            children = pids_of_children(proc.pid)
            workers = [w for c in children for w in pids_of_children(c)]
            if workers:                     # the next package's DWARF worker runs
                tree = children + workers
                break
        time.sleep(0.2)
    assert tree, "run 1 never reached the DWARF worker of its second Debian package"
    before = {f: os.stat(os.path.join(hive, f)) for f in db_files(hive)}
    recorded = {p: records.read(os.path.join(hive, p.replace("/pack/", "/state/", 1) + ".json"))
                for p in packages}
    proc.kill()
    proc.communicate()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.2)
    left = [p for p in tree if alive(p)]
    for p in left:                          # do not leave them to the next test
        os.kill(p, signal.SIGKILL)
    after_kill = {f: records.complete_db(os.path.join(hive, f)) for f in db_files(hive)}
    t0 = time.monotonic()
    run2 = dbhive("batch", "--hive", hive, "--jobs", "2", "--scratch", scratch, "--json",
                  check=False)
    return SimpleNamespace(hive=hive, scratch=scratch, packages=packages, before=before,
                           recorded=recorded, left=left, tree=tree, after_kill=after_kill,
                           run2=run2, run2_json=json.loads(run2.stdout),
                           run2_seconds=time.monotonic() - t0)


def test_kill9_takes_its_build_processes_with_it(resumed):
    """The batch's build process and its DWARF worker die with the killed batch."""
    assert len(resumed.tree) >= 2          # one build process, its forked DWARF worker
    assert resumed.left == []


def test_kill9_leaves_only_complete_dbs(resumed, batch_inputs):
    """What was finished is there and complete; the build that was running left no DB."""
    assert DEB47_DB in resumed.before
    assert second_db(batch_inputs) not in resumed.after_kill
    assert resumed.after_kill and all(resumed.after_kill.values())
    deb47 = next(p for p in resumed.packages if DEBIAN_RELEASE in p and p.endswith(".deb"))
    assert resumed.after_kill[DEB47_DB]["source_sha256"] == \
        sha256sum(os.path.join(resumed.hive, deb47))


def test_resume_does_not_rebuild_finished_dbs(resumed):
    out = by_package(resumed.run2_json)
    finished = [p for p, rec in resumed.recorded.items() if rec and rec["status"] == "built"]
    assert len(finished) >= 3              # raw BTF, btfhub, the 6.1.0-47 .deb
    for p in finished:
        assert out[p]["status"] == "skipped", out[p]
    for f, st in resumed.before.items():
        now = os.stat(os.path.join(resumed.hive, f))
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), f


def test_resume_completes_the_rest_and_reports_the_corrupt_one(resumed, batch_inputs):
    out = by_package(resumed.run2_json)
    assert set(out) == set(resumed.packages)
    deb2 = out[f"x86_64/pack/debian/{os.path.basename(batch_inputs.deb2)}"]
    assert (deb2["status"], deb2["release"], deb2["type_source"], deb2["db"]) == \
        ("built", batch_inputs.release2, "dwarf", second_db(batch_inputs))
    corrupt = out[CORRUPT]
    assert corrupt["status"] == "failed" and "truncated .deb" in corrupt["reason"]
    rec = records.read(os.path.join(resumed.hive, CORRUPT.replace("/pack/", "/state/", 1)
                                    + ".json"))
    assert rec["status"] == "failed" and rec["reason"] == corrupt["reason"] and rec["at"]
    # one line, the exit code a job engine can tell from a crash
    assert resumed.run2.returncode == 8
    assert resumed.run2.stderr.strip().splitlines()[-1] == \
        "dbhive: error: 1 of 6 packages failed (reasons above; --retry-failed builds them again)"
    assert "Traceback" not in resumed.run2.stderr
    for f in db_files(resumed.hive):
        assert records.complete_db(os.path.join(resumed.hive, f)), f


def test_identical_kernel_is_built_once(resumed, batch_inputs, debian_vmlinux):
    """The RPM holds the very vmlinux of the 6.1.0-47 .deb (same build-id): an alias, no DB."""
    out = by_package(resumed.run2_json)
    rpm = out[f"x86_64/pack/fedora/{os.path.basename(batch_inputs.rpm)}"]
    deb47 = f"x86_64/pack/debian/{os.path.basename(batch_inputs.deb47)}"
    assert (rpm["status"], rpm["alias_of"], rpm["db"]) == ("alias", deb47, DEB47_DB)
    assert rpm["build_id"] == out[deb47]["build_id"] == readelf_build_id(debian_vmlinux)
    assert not os.path.exists(os.path.join(resumed.hive, "x86_64/db/fedora"))


def test_status_lines_and_summary(resumed):
    err = resumed.run2.stderr
    assert f"skipped        x86_64/pack/btf/{os.uname().release}.btf  {os.uname().release} " \
        f"(btf)  = x86_64/db/btf/info-{os.uname().release}.db" in err.splitlines()
    lines = [ln for ln in err.splitlines() if ln.split(" ", 1)[0] in
             ("built", "skipped", "alias", "failed", "failed-earlier")]
    assert len(lines) == 6
    text = dbhive("batch", "--hive", resumed.hive, "--scratch", resumed.scratch,
                  check=False).stdout
    table = dict(ln.split() for ln in text.splitlines()[1:7])
    assert table == {"built": "0", "skipped": "4", "alias": "1", "failed": "0",
                     "failed-earlier": "1", "total": "6"}, text


def test_run_again_builds_nothing(resumed):
    t0 = time.monotonic()
    proc = dbhive("batch", "--hive", resumed.hive, "--scratch", resumed.scratch, "--json",
                  check=False)
    seconds = time.monotonic() - t0
    out = by_package(json.loads(proc.stdout))
    assert sorted(o["status"] for o in out.values()) == \
        ["alias", "failed-earlier", "skipped", "skipped", "skipped", "skipped"]
    assert proc.returncode == 8
    assert seconds < 30, seconds            # records and DB metas only: no package is read


def test_retry_failed_builds_the_failed_one_again(resumed):
    old = records.read(os.path.join(resumed.hive, CORRUPT.replace("/pack/", "/state/", 1)
                                    + ".json"))
    time.sleep(1.1)
    proc = dbhive("batch", "--hive", resumed.hive, "--scratch", resumed.scratch, "--json",
                  "--retry-failed", check=False)
    out = by_package(json.loads(proc.stdout))
    assert out[CORRUPT]["status"] == "failed"
    new = records.read(os.path.join(resumed.hive, CORRUPT.replace("/pack/", "/state/", 1)
                                    + ".json"))
    assert new["at"] > old["at"] and new["reason"] == old["reason"]
    assert [o["status"] for o in out.values()].count("skipped") == 4


def test_batch_db_of_raw_btf_equals_a_direct_build(resumed, running_db):
    """The batch's DB of this machine's BTF holds exactly what `dbhive build` wrote."""
    db = f"x86_64/db/btf/info-{os.uname().release}.db"
    assert db_digest(os.path.join(resumed.hive, db)) == db_digest(running_db)
    btfhub = f"x86_64/db/btfhub/info-{BTFHUB_RELEASE}.db"
    assert records.complete_db(os.path.join(resumed.hive, btfhub))["source_kind"] == \
        "btf-archive"


def test_memory_and_disk_budget_reduce_jobs_said_once(resumed, tmp_path):
    """With less memory than two measured DWARF builds need, one job; said once."""
    peaks = [r["peak_rss"] for r in (records.read(os.path.join(resumed.hive, f.replace(
        "/pack/", "/state/", 1) + ".json")) for f in resumed.packages)
        if r and r.get("type_source") == "dwarf" and r.get("status") == "built"]
    assert peaks and min(peaks) > 200 << 20
    memory = int(max(peaks) * 1.5)
    proc = dbhive("batch", "--hive", resumed.hive, "--scratch", resumed.scratch, "--jobs", "2",
                  "--memory", str(memory), "--json", check=False)
    warnings = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    assert warnings == [f"dbhive: warning: --jobs 2: memory for 1 ({memory / 2**30:.1f} GiB "
                        f"available, a DWARF build peaks at {max(peaks) / 2**30:.1f} GiB, "
                        f"measured)"], proc.stderr
    assert json.loads(proc.stdout)["jobs"] == 1
    proc = dbhive("batch", "--hive", resumed.hive, "--scratch", resumed.scratch, "--jobs", "2",
                  "--memory", "1000G", "--json", check=False)
    assert "warning" not in proc.stderr and json.loads(proc.stdout)["jobs"] == 2
    # a scratch directory too small for two extracted vmlinux files
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1G", "tmpfs", str(small)], check=True)
    try:
        proc = dbhive("batch", "--hive", resumed.hive, "--scratch", str(small), "--jobs", "2",
                      "--memory", "1000G", "--json", check=False)
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert "--jobs 2: scratch disk for 1 (1.0 GiB free, a vmlinux takes 0.5 GiB" in proc.stderr
    assert json.loads(proc.stdout)["jobs"] == 1


# ----------------------------------------------------------------------------- the manifest

def test_index_manifest_against_sha256sum_and_readelf(resumed, batch_inputs, debian_vmlinux):
    man = json.loads(dbhive("index", "--hive", resumed.hive, "--json").stdout)
    entries = {e["package"]: e for e in man["entries"]}
    assert set(entries) == set(resumed.packages)            # no DB without its package
    assert man["counts"] == {"built": 4, "alias": 1, "failed": 1, "stale": 0, "pending": 0}
    for pkg, e in entries.items():
        assert e["sha256"] == sha256sum(os.path.join(resumed.hive, pkg)), pkg
        if e["status"] == "built":
            assert e["db_sha256"] == sha256sum(os.path.join(resumed.hive, e["db"])), pkg
    deb47 = entries[f"x86_64/pack/debian/{os.path.basename(batch_inputs.deb47)}"]
    assert (deb47["release"], deb47["arch"], deb47["build_id"], deb47["type_source"]) == \
        (DEBIAN_RELEASE, "x86_64", readelf_build_id(debian_vmlinux), "dwarf")
    assert deb47["btf"] == f"x86_64/btf/{DEBIAN_RELEASE}.btf"
    rpm = entries[f"x86_64/pack/fedora/{os.path.basename(batch_inputs.rpm)}"]
    assert (rpm["status"], rpm["alias_of"], rpm["db"]) == ("alias", deb47["package"], DEB47_DB)
    assert entries[CORRUPT]["status"] == "failed"
    # --verify reads everything again and agrees
    again = json.loads(dbhive("index", "--hive", resumed.hive, "--json", "--verify").stdout)
    assert again == man
    text = dbhive("index", "--hive", resumed.hive).stdout.splitlines()
    assert text[0].split("\t")[:3] == ["STATUS", "PACKAGE", "RELEASE"] and len(text) == 7


def test_index_diff_names_what_changed(resumed, tmp_path):
    man = tmp_path / "before.json"
    dbhive("index", "--hive", resumed.hive, "--out", str(man))
    same = json.loads(dbhive("index", "--hive", resumed.hive, "--diff", str(man),
                             "--json").stdout)
    assert same == {"added": [], "removed": [], "changed": []}
    # a damaged manifest entry is found (the diff can fail)
    doctored = json.loads(man.read_text())
    victim = next(e for e in doctored["entries"] if e["status"] == "built")
    real_sha, victim["db_sha256"] = victim["db_sha256"], "0" * 64
    bad = tmp_path / "doctored.json"
    bad.write_text(json.dumps(doctored))
    d = json.loads(dbhive("index", "--hive", resumed.hive, "--diff", str(bad), "--json").stdout)
    assert [c["entry"] for c in d["changed"]] == [victim["package"]]
    assert d["changed"][0]["fields"] == {"db_sha256": ["0" * 64, real_sha]}
    # a package added (not built yet) and one gone
    hive2 = tmp_path / "hive2"
    merge_hives(str(hive2), resumed.hive)
    os.unlink(hive2 / CORRUPT)
    extra = hive2 / "x86_64/pack/btf/5.99.0-1-test.btf"
    extra.write_bytes((hive2 / f"x86_64/pack/btf/{os.uname().release}.btf").read_bytes())
    lines = dbhive("index", "--hive", str(hive2), "--diff", str(man)).stdout.splitlines()
    assert lines == ["+ x86_64/pack/btf/5.99.0-1-test.btf\tpending\t-",
                     f"- {CORRUPT}\tfailed\t-"]
    bogus = tmp_path / "bogus.json"
    bogus.write_text("[1, 2]")
    proc = dbhive("index", "--hive", resumed.hive, "--diff", str(bogus), check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == \
        f"dbhive: error: {bogus}: not a dbhive manifest of version 1"


# ----------------------------------------------------------------------------- shards

def test_shard_assignment_is_stable_and_balanced():
    names = [f"x86_64/pack/debian/linux-image-6.1.0-{i}-cloud-amd64-dbg_{i}_amd64.deb"
             for i in range(2000)]
    first = {n: shard_of(n, 4) for n in names[:1000]}
    assert {n: shard_of(n, 4) for n in names[:1000]} == first      # stable, not hash()
    more = {n: shard_of(n, 4) for n in names}                       # packages added
    assert all(more[n] == s for n, s in first.items())
    sizes = [list(more.values()).count(i) for i in range(4)]
    assert all(400 <= s <= 600 for s in sizes), sizes
    # Python's salted hash() would differ between processes; ours does not
    out = subprocess.run([os.path.join(os.path.dirname(DBHIVE), "python"), "-c",
                          "from dbhive.batch.pack import shard_of; "
                          f"print([shard_of(n, 4) for n in {names[:50]!r}])"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == str([first[n] for n in names[:50]])


def test_two_shards_make_exactly_one_run(resumed, batch_inputs, tmp_path, debian_vmlinux):
    """Shard 0 by --shard 0/2, shard 1 by --shards 2 with $JOB_COMPLETION_INDEX=1 (as a
    Kubernetes Indexed Job), in two hives at the same time; together: the one run."""
    deb47 = f"x86_64/pack/debian/{os.path.basename(batch_inputs.deb47)}"
    rpm = f"x86_64/pack/fedora/{os.path.basename(batch_inputs.rpm)}"
    assert shard_of(deb47, 2) != shard_of(rpm, 2)      # the alias crosses the shards
    hives = [str(tmp_path / f"shard{i}") for i in (0, 1)]
    for h in hives:
        make_pack(h, batch_inputs)
    common = ["--jobs", "1", "--workers", "1", "--json"]
    common.append("--keep-vmlinux")
    p0 = subprocess.Popen([DBHIVE, "batch", "--hive", hives[0], "--shard", "0/2", *common],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p1 = subprocess.Popen([DBHIVE, "batch", "--hive", hives[1], "--shards", "2", *common],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "JOB_COMPLETION_INDEX": "1"})
    outs = [json.loads(p.communicate(timeout=3600)[0]) for p in (p0, p1)]
    mine = [set(by_package(o)) for o in outs]
    assert mine[0] and mine[1] and not mine[0] & mine[1]
    assert mine[0] | mine[1] == set(resumed.packages)
    assert [o["shard"] for o in outs] == ["0/2", "1/2"]
    # the RPM's shard built it: the same DB content as the .deb's DB of the same kernel
    shard_rpm = hives[shard_of(rpm, 2)]
    rpm_db = os.path.join(shard_rpm, f"x86_64/db/fedora/info-{DEBIAN_RELEASE}.db")
    assert db_digest(rpm_db) == db_digest(os.path.join(resumed.hive, DEB47_DB))
    # --keep-vmlinux kept the very vmlinux of the package
    kept = os.path.join(shard_rpm, f"x86_64/vmlinux/vmlinux-{DEBIAN_RELEASE}")
    assert subprocess.run(["cmp", kept, debian_vmlinux]).returncode == 0
    merged = str(tmp_path / "merged")
    merge_hives(merged, *hives)
    one_run = normalized_index(resumed.hive)
    assert normalized_index(merged) == one_run
    # the comparison can fail: one shard alone is not the run
    assert normalized_index(hives[0]) != one_run
    man = json.loads(dbhive("index", "--hive", merged, "--json").stdout)
    entry = next(e for e in man["entries"] if e["package"] == rpm)
    assert (entry["status"], entry["alias_of"]) == ("alias", deb47)


def test_shard_options_are_checked(tmp_path):
    hive = tmp_path / "hive"
    (hive / "x86_64/pack/debian").mkdir(parents=True)
    cases = [
        (["--shards", "2"], {}, "--shards N takes the shard index from $JOB_COMPLETION_INDEX, "
                                "which is not set (outside an Indexed Job use --shard I/N)"),
        (["--shards", "2"], {"JOB_COMPLETION_INDEX": "2"},
         "$JOB_COMPLETION_INDEX is 2, but --shards 2 has indexes 0..1: the Job's completions "
         "must equal --shards"),
        (["--shard", "2/2"], {}, "--shard 2/2: the index must be 0..N-1 (N >= 1)"),
        (["--shard", "x"], {}, "--shard 'x': expected I/N, e.g. --shard 0/4"),
        (["--shard", "0/2", "--shards", "2"], {}, "give --shard I/N or --shards N, not both"),
        (["--jobs", "0"], {}, "--jobs and --workers must be at least 1"),
    ]
    for args, env, message in cases:
        proc = dbhive("batch", "--hive", str(hive), *args, env=env, check=False)
        assert (proc.returncode, proc.stderr.strip()) == (1, f"dbhive: error: {message}"), args
    proc = dbhive("batch", "--hive", str(tmp_path / "nothing"), check=False)
    assert (proc.returncode, proc.stderr.strip()) == \
        (1, f"dbhive: error: {tmp_path / 'nothing'}: no such hive directory")


# ----------------------------------------------------------------------------- small hives

def test_same_release_two_kernels_is_a_conflict_same_blob_an_alias(tmp_path, running_btf,
                                                                   debian_vmlinux_btf):
    """Two different BTF blobs named for one release: the first in package order is built,
    the second fails saying why; the same blob under another release name is an alias."""
    hive = tmp_path / "hive"
    d = hive / "x86_64/pack/btf"
    (d / "sub").mkdir(parents=True)
    (d / f"{DEBIAN_RELEASE}.btf").write_bytes(open(debian_vmlinux_btf, "rb").read())
    (d / "sub" / f"{DEBIAN_RELEASE}.btf").write_bytes(open(running_btf, "rb").read())
    (d / "zz-6.1.0-47-copy.btf").write_bytes(open(debian_vmlinux_btf, "rb").read())
    proc = dbhive("batch", "--hive", str(hive), "--jobs", "2", "--json", check=False)
    out = by_package(json.loads(proc.stdout))
    first, second = f"x86_64/pack/btf/{DEBIAN_RELEASE}.btf", \
        f"x86_64/pack/btf/sub/{DEBIAN_RELEASE}.btf"
    assert out[first]["status"] == "built"
    assert out[second]["status"] == "failed"
    assert out[second]["reason"] == (
        f"{second}: kernel {DEBIAN_RELEASE} (build-id -) would replace the DB "
        f"x86_64/db/btf/info-{DEBIAN_RELEASE}.db of another kernel of the same release, "
        f"built from {first}; not built")
    copy = out["x86_64/pack/btf/zz-6.1.0-47-copy.btf"]
    assert (copy["status"], copy["alias_of"]) == ("alias", first)
    assert db_files(str(hive)) == [f"x86_64/db/btf/info-{DEBIAN_RELEASE}.db"]
    assert proc.returncode == 8


def test_a_killed_build_process_is_a_recorded_failure(tmp_path, batch_inputs):
    """A build process killed from outside (what the OOM killer does) fails its package,
    not the batch: the other packages are built."""
    hive = str(tmp_path / "hive")
    make_pack(hive, batch_inputs, only={
        f"x86_64/pack/fedora/{os.path.basename(batch_inputs.rpm)}",
        f"x86_64/pack/{BTFHUB_DIR}/{BTFHUB_RELEASE}.btf.tar.xz"})
    proc = subprocess.Popen([DBHIVE, "batch", "--hive", hive, "--jobs", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rpm = f"x86_64/pack/fedora/{os.path.basename(batch_inputs.rpm)}"
    deadline = time.monotonic() + 600
    first, victim = None, None
    while time.monotonic() < deadline and victim is None:
        # the btfhub package's build process comes first, then the RPM's
        kids = pids_of_children(proc.pid)
        if kids and first is None:
            first = kids[0]
        victim = next((k for k in kids if k != first), None)
        time.sleep(0.1)
    assert victim
    time.sleep(2)
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    res = by_package(json.loads(out))
    assert res[rpm]["status"] == "failed"
    assert res[rpm]["reason"] == "the build process was killed by SIGKILL (out of memory?)"
    assert res[f"x86_64/pack/{BTFHUB_DIR}/{BTFHUB_RELEASE}.btf.tar.xz"]["status"] == "built"
    assert proc.returncode == 8 and "Traceback" not in err


def test_sigterm_stops_cleanly(tmp_path, batch_inputs):
    """SIGTERM (a pod being deleted): builds stop, temp files go, nothing half done is
    recorded, exit 130; the next run builds it."""
    hive, scratch = str(tmp_path / "hive"), tmp_path / "scratch"
    scratch.mkdir()
    rpm = f"x86_64/pack/fedora/{os.path.basename(batch_inputs.rpm)}"
    make_pack(hive, batch_inputs, only={rpm})
    proc = subprocess.Popen([DBHIVE, "batch", "--hive", hive, "--jobs", "1", "--workers", "2",
                             "--scratch", str(scratch)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    tree = []
    while time.monotonic() < deadline and not tree:
        kids = pids_of_children(proc.pid)
        workers = [w for k in kids for w in pids_of_children(k)]
        if workers:
            tree = kids + workers
        time.sleep(0.2)
    assert tree
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == \
        "dbhive: error: interrupted: 0 of 1 packages done; run it again to go on"
    assert not any(alive(p) for p in tree)
    assert os.listdir(scratch) == []
    assert not os.path.exists(os.path.join(hive, "x86_64/state"))
    assert db_files(hive) == []


def test_with_btf_passes_through_to_build(tmp_path, batch_inputs):
    """--with-btf: each kernel's BTF and btfhub archive beside its DB, part of what makes a
    package done."""
    hive = str(tmp_path / "hive")
    hub = f"x86_64/pack/{BTFHUB_DIR}/{BTFHUB_RELEASE}.btf.tar.xz"
    make_pack(hive, batch_inputs, only={hub})
    dbhive("batch", "--hive", hive)                       # without: no btfhub archive
    archive = os.path.join(hive, f"x86_64/btf/{BTFHUB_RELEASE}.btf.tar.xz")
    assert not os.path.exists(archive)
    out = by_package(json.loads(dbhive("batch", "--hive", hive, "--with-btf", "--json").stdout))
    assert out[hub]["status"] == "built" and os.path.isfile(archive)
    out = by_package(json.loads(dbhive("batch", "--hive", hive, "--with-btf", "--json").stdout))
    assert out[hub]["status"] == "skipped"


# ----------------------------------------------------------------------------- filters

def test_distro_and_arch_filters_build_what_one_run_builds_restricted(tmp_path, batch_inputs):
    """Each --distro / --arch filter builds exactly the packages it names, as one unfiltered
    run of the hive builds them (same status, DB content, failure), and nothing else.  The
    hive: the mini-hive's raw BTF, btfhub archive and corrupt package, and the corrupt one
    again under a second <arch>/ (no package kernel crosses a filter, so no alias moves)."""
    btf = f"x86_64/pack/btf/{os.uname().release}.btf"
    hub = f"x86_64/pack/{BTFHUB_DIR}/{BTFHUB_RELEASE}.btf.tar.xz"
    other = f"aarch64/pack/debian/{CORRUPT_NAME}"

    def hive(name: str) -> str:
        h = str(tmp_path / name)
        make_pack(h, batch_inputs, only={btf, hub, CORRUPT})
        os.makedirs(os.path.dirname(os.path.join(h, other)))
        os.link(os.path.join(h, CORRUPT), os.path.join(h, other))
        return h

    everything = hive("all")
    proc = dbhive("batch", "--hive", everything, "--json", check=False)
    assert proc.returncode == 8                     # the two corrupt packages
    one_run = normalized_index(everything)
    assert set(one_run) == {btf, hub, CORRUPT, other}
    assert [one_run[p][0] for p in (btf, hub, CORRUPT, other)] == \
        ["built", "built", "failed", "failed"]
    filters = {("--distro", "btf"): {btf},
               ("--distro", "btfhub", "--distro", "debian"): {hub, CORRUPT, other},
               ("--arch", "aarch64"): {other},
               ("--arch", "x86_64"): {btf, hub, CORRUPT},
               ("--arch", "x86_64", "--distro", "btfhub"): {hub}}
    for i, (args, chosen) in enumerate(filters.items()):
        h = hive(f"filtered-{i}")
        out = json.loads(dbhive("batch", "--hive", h, *args, "--json", check=False).stdout)
        assert set(by_package(out)) == chosen, args
        assert out["counts"]["built"] == len(chosen & {btf, hub}), args
        got = normalized_index(h)
        assert {p: got[p] for p in chosen} == {p: one_run[p] for p in chosen}, args
        assert {p: got[p][0] for p in set(got) - chosen} == \
            {p: "pending" for p in set(one_run) - chosen}, args
    # the comparison can fail: a filtered hive is not the whole run
    assert normalized_index(h) != one_run


# ----------------------------------------------------------------------------- C headers

def test_with_header_builds_each_kernels_header(tmp_path, batch_inputs):
    """--with-header on a package not built yet: the build writes the header beside the DB
    (the same bytes `dbhive header` writes of that DB), and the manifest records it."""
    hive = str(tmp_path / "hive")
    hub = f"x86_64/pack/{BTFHUB_DIR}/{BTFHUB_RELEASE}.btf.tar.xz"
    make_pack(hive, batch_inputs, only={hub})
    out = by_package(json.loads(dbhive("batch", "--hive", hive, "--with-header",
                                       "--json").stdout))
    head = f"x86_64/head/btfhub/{BTFHUB_RELEASE}.h"
    assert (out[hub]["status"], out[hub]["head"]) == ("built", head)
    with open(os.path.join(hive, head)) as fh:
        text = fh.read()
    assert text == dbhive("header", os.path.join(hive, out[hub]["db"])).stdout
    man = json.loads(dbhive("index", "--hive", hive, "--json").stdout)
    [entry] = man["entries"]
    assert (entry["head"], entry["head_sha256"]) == (head, sha256sum(os.path.join(hive, head)))


def test_with_header_writes_headers_of_built_dbs_without_rebuilding(resumed, tmp_path,
                                                                   debian_vmlinux):
    """On the resumed mini-hive (a copy): every DB is skipped, not rebuilt, and its header
    written from it; each compiles for BPF, the DWARF-built 6.1.0-47 one is that vmlinux by
    pahole; run again nothing is written; a header removed or stale is written again."""
    from tests.support import cheader_check as C
    from tests.support.pahole_oracle import pahole_layouts
    hive = str(tmp_path / "hive")
    merge_hives(hive, resumed.hive)                         # DBs, records: hard links
    dbs = {f: os.stat(os.path.join(hive, f)) for f in db_files(hive)}
    out = by_package(json.loads(dbhive("batch", "--hive", hive, "--with-header", "--json",
                                       check=False).stdout))
    built = {p: o for p, o in out.items() if o["status"] == "skipped"}
    assert len(built) == 4 and {o["status"] for o in out.values()} == \
        {"skipped", "alias", "failed-earlier"}
    for f, st in dbs.items():                               # no DB was written again
        now = os.stat(os.path.join(hive, f))
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), f
    heads = {p: os.path.join(hive, o["head"]) for p, o in built.items()}
    assert sorted(os.path.relpath(os.path.join(d, f), hive) for d, _, fs in
                  os.walk(os.path.join(hive, "x86_64/head")) for f in fs) == \
        sorted(o["head"] for o in built.values())
    for h in heads.values():
        proc = C.compile_header(h)
        assert proc.returncode == 0, (h, proc.stderr[-2000:])
    deb47 = heads[next(p for p in built if DEBIAN_RELEASE in p and p.endswith(".deb"))]
    assert C.layout_differences(pahole_layouts(debian_vmlinux, "dwarf"),
                                C.compiled_layouts(deb47)) == []
    man = {e["package"]: e for e in
           json.loads(dbhive("index", "--hive", hive, "--json").stdout)["entries"]}
    for p, h in heads.items():
        assert man[p]["head_sha256"] == sha256sum(h)
    # again: everything current, decided from the records, nothing written
    before = {h: os.stat(h) for h in heads.values()}
    again = json.loads(dbhive("batch", "--hive", hive, "--with-header", "--json",
                              check=False).stdout)
    assert {o["status"] for o in again["packages"]} == {"skipped", "alias", "failed-earlier"}
    for h, st in before.items():
        assert (os.stat(h).st_ino, os.stat(h).st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    # one removed, one stale (another input's): both written again, DBs untouched
    gone, stale = sorted(heads.values())[:2]
    os.unlink(gone)
    with open(stale) as fh:
        text = fh.read()
    with open(stale, "w") as fh:
        fh.write(text.replace("source-sha256=", "source-sha256=0", 1))
    man = {e["package"]: e for e in
           json.loads(dbhive("index", "--hive", hive, "--json").stdout)["entries"]}
    assert sum(1 for e in man.values() if "head_stale" in e) == 1
    dbhive("batch", "--hive", hive, "--with-header", check=False)
    with open(stale) as fh:
        assert fh.read() == text
    assert os.path.isfile(gone)
    for f, st in dbs.items():
        assert os.stat(os.path.join(hive, f)).st_ino == st.st_ino, f
