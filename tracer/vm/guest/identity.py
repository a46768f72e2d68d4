"""In the guest: the booted kernel's identity and its own BTF, as one JSON object.

release and arch (uname), the GNU build-id of /sys/kernel/notes (what every DB lookup keys
on), and /sys/kernel/btf/vmlinux's size and sha256 when the kernel exposes it.
"""
import hashlib
import json
import os

from tracer.kernel import SYS_BTF, running


def identity() -> dict:
    k = running()
    out = {"release": k.release, "arch": k.machine, "build_id": k.build_id, "btf": None}
    try:
        with open(SYS_BTF, "rb") as fh:
            blob = fh.read()
        out["btf"] = {"path": SYS_BTF, "size": len(blob),
                      "sha256": hashlib.sha256(blob).hexdigest()}
    except OSError as e:
        out["btf_error"] = f"{SYS_BTF}: {e.strerror}"
    cfg = f"/boot/config-{k.release}"
    if os.path.exists(cfg):
        with open(cfg) as fh:
            want = ("CONFIG_DEBUG_INFO_BTF", "CONFIG_KPROBES", "CONFIG_UPROBES", "CONFIG_BPF_JIT")
            out["config"] = {ln.split("=")[0]: ln.strip().split("=", 1)[1] for ln in fh
                             if ln.split("=")[0] in want}
    return out


if __name__ == "__main__":
    print(json.dumps(identity(), indent=1))
