"""Coverage-guided fuzzing (atheris / libFuzzer) of the readers a user's files reach: BTF,
DWARF, packages, Go binaries (pclntab and build info), and the server's request parsing.

    .venv/bin/python -m bench.fuzz                      # every target, 600 s each
    .venv/bin/python -m bench.fuzz --target btf --seconds 30 --json

Each target runs in its own process with its seeds (tests/support/fuzz_targets.py) as the
starting corpus; it reports executions, coverage (libFuzzer's `cov` edges and `ft`
features: the distinct paths found) and crashes.  A crash is any exception other than the
project's own DbhiveError; its input is kept under $DBHIVE_TEST_CACHE/fuzz-crashes/.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from scripts.realdata import CACHE, RUNNING_BTF

TARGETS = ("btf", "dwarf", "archive", "go", "server")


def environment() -> dict:
    """What some targets need: a real DB (server) and a real Go binary (go)."""
    from tests.support.go_builds import binary
    from tests.support.resolver_dbs import build_btf_db, running_meta
    return {"DBHIVE_FUZZ_DB": build_btf_db(RUNNING_BTF, running_meta()),
            "DBHIVE_FUZZ_GO_BINARY": binary("1.24", "tlsapp", "sw")}


def run(target: str, seconds: int, env: dict) -> dict:
    from tests.support.fuzz_targets import seeds
    os.environ.update(env)
    crashes = os.path.join(CACHE, "fuzz-crashes", target)
    os.makedirs(crashes, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dbhive-fuzz-corpus-") as corpus:
        seeds(target, corpus)
        p = subprocess.run([sys.executable, "-m", "bench.fuzz", "--child", target, corpus,
                            f"-max_total_time={seconds}", "-print_final_stats=1",
                            "-rss_limit_mb=2048", "-timeout=20",
                            f"-artifact_prefix={crashes}/"],
                           capture_output=True, text=True, env={**os.environ, **env},
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    err = p.stderr
    stat = dict(re.findall(r"stat::(\w+):\s+(\d+)", err))
    cov = re.findall(r"cov: (\d+) ft: (\d+)", err)
    crashed = p.returncode != 0
    return {"target": target, "seconds": seconds,
            "executions": int(stat.get("number_of_executed_units", 0)),
            "execs_per_s": int(stat.get("average_exec_per_sec", 0)),
            "coverage_edges": int(cov[-1][0]) if cov else 0,
            "features": int(cov[-1][1]) if cov else 0,
            "crashes": int(crashed),
            "crash_report": err[-4000:] if crashed else ""}


def child(target: str, argv: list) -> None:
    import atheris
    # atheris 2.3's bytecode rewriting breaks the DWARF scanner's hot loop on Python 3.11
    # (a local seen as unbound): those two modules run uninstrumented, so their own branches
    # do not guide the fuzzer, but everything they call does
    with atheris.instrument_imports(include=["dbhive", "resolver"],
                                    exclude=["dbhive.dwarf.scan", "dbhive.dwarf.forms"]):
        import dbhive.archive.stream      # noqa: F401  (imported here to be instrumented)
        import dbhive.btf                 # noqa: F401
        import dbhive.dwarf.api           # noqa: F401
        import dbhive.surftrace           # noqa: F401
        import resolver.golang.report     # noqa: F401
        import resolver.server            # noqa: F401
    from tests.support.fuzz_targets import TARGETS as FUNCS
    fn = FUNCS[target]
    atheris.Setup([sys.argv[0]] + argv, fn)
    atheris.Fuzz()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=TARGETS, action="append")
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    env = environment()
    results = [run(t, args.seconds, env) for t in (args.target or TARGETS)]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'target':8} {'seconds':>7} {'executions':>10} {'exec/s':>7} {'edges':>6} "
          f"{'features':>8} {'crashes':>7}")
    for r in results:
        print(f"{r['target']:8} {r['seconds']:7} {r['executions']:10} {r['execs_per_s']:7} "
              f"{r['coverage_edges']:6} {r['features']:8} {r['crashes']:7}")
        if r["crashes"]:
            print(r["crash_report"])


if __name__ == "__main__":
    main()
