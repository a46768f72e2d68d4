"""In the guest: what `tracer start` attaches, as the kernel itself reports it.

    python3 -m tracer.vm.guest.attach_check --go-probe PROGRAM [tracer source options]

Starts the Go test program (a TLS client and server), then `tracer start --go-delay 0` with
the given source options, waits until the kernel shows the tracer's uprobes, and records
`bpftool perf show` (every BPF program attached to a perf event: tracepoint, kprobe, uprobe…)
and `bpftool prog show` (program types) for the tracer's pid; then stops the tracer with
SIGTERM and records what is left attached.  Prints one JSON object.
"""
import argparse
import json
import signal
import subprocess
import sys
import time


def bpftool(*args):
    p = subprocess.run(["bpftool", "--json", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"bpftool {' '.join(args)}: {p.stderr.strip()}")
    return json.loads(p.stdout or "[]")


def attached(pid):
    return [e for e in bpftool("perf", "show") if e.get("pid") == pid]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--go-probe", required=True)
    ap.add_argument("--wait", type=float, default=240)
    a, source = ap.parse_known_args()
    probe = subprocess.Popen([a.go_probe, "serve"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL)
    tracer = subprocess.Popen(["tracer", "start", "--go-delay", "0", *source],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out = {"tracer_pid": tracer.pid, "go_pid": probe.pid}
    deadline = time.monotonic() + a.wait
    seen = []
    while time.monotonic() < deadline and tracer.poll() is None:
        seen = attached(tracer.pid)
        if any(e.get("fd_type") == "uprobe" for e in seen):
            break
        time.sleep(0.5)
    out["attached"] = seen
    ids = {e["prog_id"] for e in seen}
    out["programs"] = [{"id": p["id"], "type": p.get("type"), "name": p.get("name")}
                       for p in bpftool("prog", "show") if p["id"] in ids]
    if tracer.poll() is None:
        tracer.send_signal(signal.SIGTERM)
    try:
        _, err = tracer.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        tracer.kill()
        _, err = tracer.communicate()
    out["tracer_rc"] = tracer.returncode
    out["tracer_stderr"] = err[-4000:]
    out["after"] = attached(tracer.pid)
    probe.stdin.close()
    try:
        out["go_rc"] = probe.wait(timeout=30)
    except subprocess.TimeoutExpired:
        probe.kill()
        out["go_rc"] = "killed"
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
