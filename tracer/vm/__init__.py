"""Boot real kernels under QEMU and run the project inside them.

The pieces, each cached under the VM cache directory (`cache.vm_cache()`) and keyed by the
hash of its inputs, so a second run rebuilds nothing:

* `debs`    — Debian packages fetched with apt through a private sources list (bookworm and
              bullseye), so the host's apt state is never touched.
* `kernel`  — one bootable kernel: its vmlinuz, modules and headers, from an image package
              name, a local .deb or a vmlinuz plus modules directory.
* `image`   — the guest's disks: a Debian bookworm userland (python3, bcc, the project's
              Python dependencies) as an ext4 image shared by every kernel, a small ext4 disk
              per kernel (its modules and the headers bcc compiles against) and a per-kernel
              initramfs that loads that kernel's own virtio modules and mounts the disks.
* `qemu`    — one boot: the disks, a job disk (the project's code, DBs, the commands), an
              output disk the guest writes a tar archive to, the serial console for progress;
              a timeout and a clean power-off.
* `verify`  — `tracer vm-verify`: the tracer's own proof run inside the booted kernel.
"""
from __future__ import annotations


from dbhive.errors import SetupError


class VMError(SetupError):
    """A user-facing failure (missing package, no DB, guest did not finish): one line, and
    exit code 4 (SetupError's: the check could not be run; 1 is kept for FAIL)."""
