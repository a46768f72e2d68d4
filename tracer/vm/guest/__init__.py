"""What runs inside the guest: the initramfs's `init` (busybox sh), `stage2` (PID 1 on the
Debian root; runs the job's steps), and Python modules the steps call
(`python3 -m tracer.vm.guest.<name>`)."""
