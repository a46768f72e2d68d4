"""One bootable kernel: vmlinuz, its modules and the headers bcc compiles against.

A kernel comes from a Debian image package (a name fetched with apt, or a local .deb whose
headers packages sit next to it or are fetched), or from local files: a vmlinuz, its
/lib/modules/R directory and a headers build tree (the directory's `build` link, or
`--headers`).  Either way it is turned into one cached directory:

    <cache>/kernels/<release>-<key>/
        vmlinuz         the kernel QEMU boots
        kernel.img      ext4: lib/modules/R (with modules.dep), usr/src/linux-headers-*,
                        usr/lib/linux-kbuild-*, boot/config-R — mounted by the guest
        initrd/         the virtio modules the initramfs loads, and their load order
        kernel.json     release, where it came from, what the disk holds

The key is a digest of the inputs (package files or trees), so a new build of the same
release gets its own directory.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Optional

from . import VMError, debs
from .cache import build_once, file_sha256, key_of, tree_digest, vm_cache

# what the initramfs must load to see its disks: the kernel's own virtio PCI and block
# drivers (Debian's cloud kernels build them as modules); dependencies come from modules.dep
INITRD_MODULES = ("virtio_pci", "virtio_blk")
_RELEASE = re.compile(r"^[0-9][A-Za-z0-9._+~-]*$")


@dataclass
class Kernel:
    release: str
    dir: str                    # the cached kernel directory (see module docstring)
    source: str                 # where it came from, for reports
    dbg_package: Optional[str]  # the Debian debuginfo package of this kernel, if known

    @property
    def vmlinuz(self) -> str:
        return os.path.join(self.dir, "vmlinuz")

    @property
    def disk(self) -> str:
        return os.path.join(self.dir, "kernel.img")

    @property
    def initrd_modules(self) -> list:
        """Host paths of the modules the initramfs loads, in load order."""
        with open(os.path.join(self.dir, "initrd", "load.list")) as fh:
            return [os.path.join(self.dir, "initrd", n) for n in fh.read().split()]

    @property
    def info(self) -> dict:
        with open(os.path.join(self.dir, "kernel.json")) as fh:
            return json.load(fh)


def release_of_package(name: str) -> str:
    """linux-image-R[-unsigned|-dbg] -> R."""
    m = re.match(r"^linux-image-(.+?)(-unsigned|-dbg)?$", name)
    if not m:
        raise VMError(f"{name}: not a Linux kernel image package name (linux-image-R)")
    return m.group(1)


def from_package(spec: str, cache: Optional[str] = None, offline: bool = False) -> Kernel:
    """A kernel from an image package: a name (fetched with apt) or a local .deb.

    The headers packages (linux-headers-R and its -common and linux-kbuild dependencies) are
    taken from next to a local .deb when present, else fetched."""
    apt = debs.Apt(cache)
    local_dir = None
    if spec.endswith(".deb") or os.sep in spec:
        if not os.path.isfile(spec):
            raise VMError(f"no such package file: {spec}")
        image_deb = os.path.abspath(spec)
        local_dir = os.path.dirname(image_deb)
        name = debs.control(image_deb).get("Package", "")
    else:
        name = spec
    if name.endswith("-dbg"):
        raise VMError(f"{name} is the debuginfo package; give the image package "
                      f"({name[:-4]}, or {name[:-4]}-unsigned)")
    release = release_of_package(name)
    if local_dir is None:
        image_deb = get_deb(apt, name, None, offline)
    headers = [get_deb(apt, f"linux-headers-{release}", local_dir, offline)]
    for dep in debs.depends_names(debs.control(headers[0])):
        if dep.startswith("linux-headers-") or dep.startswith("linux-kbuild-"):
            headers.append(get_deb(apt, dep, local_dir, offline))
    inputs = [(os.path.basename(p), file_sha256(p)) for p in [image_deb, *headers]]
    key = key_of("kernel-package", inputs)
    src = f"{name} {debs.control(image_deb).get('Version', '?')}"

    def stage(tree: str) -> None:
        for deb in [image_deb, *headers]:
            debs.extract(deb, tree)

    return _build(release, key, stage, src, f"linux-image-{release}-dbg", cache)


def from_files(vmlinuz: str, modules: str, headers: Optional[str] = None,
               cache: Optional[str] = None) -> Kernel:
    """A kernel from local files: vmlinuz, its lib/modules/R directory, a headers tree."""
    for p, what in ((vmlinuz, "kernel image"), (modules, "modules directory")):
        if not os.path.exists(p):
            raise VMError(f"no such {what}: {p}")
    modules = os.path.abspath(modules)
    release = os.path.basename(modules.rstrip(os.sep))
    if not _RELEASE.match(release) or not os.path.isdir(os.path.join(modules, "kernel")):
        raise VMError(f"{modules}: not a /lib/modules/<release> directory (no kernel/ in it)")
    root = _tree_root(modules, release)
    build = headers or _link_target(os.path.join(modules, "build"), root)
    if not build or not os.path.isdir(build):
        raise VMError(f"no kernel headers for {release}: {modules}/build does not lead to a "
                      f"headers tree; give --headers DIR (e.g. /usr/src/linux-headers-{release})")
    build = os.path.realpath(build)
    source = _link_target(os.path.join(modules, "source"), root)
    if source == build:
        source = None
    parts = [("vmlinuz", file_sha256(vmlinuz)), ("modules", _modules_digest(modules)),
             ("build", tree_digest(build))]
    if source:
        parts.append(("source", tree_digest(source)))
    key = key_of("kernel-files", release, parts)

    def stage(tree: str) -> None:
        mod_dest = os.path.join(tree, "lib", "modules", release)
        shutil.copytree(modules, mod_dest, symlinks=True,
                        ignore=lambda d, names: [n for n in names if d == modules
                                                 and n in ("build", "source")])
        os.makedirs(os.path.join(tree, "boot"), exist_ok=True)
        shutil.copy(vmlinuz, os.path.join(tree, "boot", f"vmlinuz-{release}"))
        config = os.path.join(root or "/", "boot", f"config-{release}")
        if os.path.isfile(config):
            shutil.copy(config, os.path.join(tree, "boot"))
        src_dir = os.path.join(tree, "usr", "src")
        shutil.copytree(build, os.path.join(src_dir, f"linux-headers-{release}"), symlinks=True)
        os.symlink(f"/usr/src/linux-headers-{release}", os.path.join(mod_dest, "build"))
        if source:
            shutil.copytree(source, os.path.join(src_dir, os.path.basename(source)),
                            symlinks=True)
            os.symlink(f"/usr/src/{os.path.basename(source)}", os.path.join(mod_dest, "source"))

    return _build(release, key, stage, os.path.abspath(vmlinuz), None, cache)


def _tree_root(modules: str, release: str) -> Optional[str]:
    """The root of the tree a .../lib/modules/R directory belongs to (an unpacked package or
    an installed system), or None."""
    tail = os.path.join("lib", "modules", release)
    return modules[:-len(tail)] if modules.endswith(os.sep + tail) else None


def _link_target(link: str, root: Optional[str]) -> Optional[str]:
    """Where a modules directory's build/source link leads: an absolute target is looked for
    under ROOT first (Debian's links name /usr/src/..., which in an unpacked package lives
    next to lib/), then on this machine."""
    if os.path.islink(link):
        target = os.readlink(link)
        if os.path.isabs(target) and root:
            inside = os.path.join(root, target.lstrip("/"))
            if os.path.isdir(inside):
                return os.path.realpath(inside)
    if os.path.isdir(link):
        return os.path.realpath(link)
    return None


def _modules_digest(modules: str) -> str:
    """Digest of a modules directory, its build/source links left out (hashed separately)."""
    import hashlib
    h = hashlib.sha256()
    for name in sorted(os.listdir(modules)):
        if name in ("build", "source"):
            continue
        p = os.path.join(modules, name)
        h.update(name.encode() + b"\0")
        h.update((tree_digest(p, follow_top=False) if os.path.isdir(p) else file_sha256(p))
                 .encode())
    return h.hexdigest()


def get_deb(apt: "debs.Apt", name: str, local_dir: Optional[str], offline: bool) -> str:
    if local_dir:
        found = sorted(glob.glob(os.path.join(local_dir, f"{name}_*.deb")))
        if found:
            return found[-1]
    hit = apt.cached(name)
    if hit:
        return hit
    if offline:
        raise VMError(f"{name} is not in the cache and --offline was given")
    return apt.fetch(name)


def _build(release: str, key: str, stage, source: str, dbg: Optional[str],
           cache: Optional[str]) -> Kernel:
    if not _RELEASE.match(release):
        raise VMError(f"unusable kernel release {release!r}")
    path = os.path.join(vm_cache(cache), "kernels", f"{release}-{key}")

    def make(out: str) -> None:
        os.makedirs(out, exist_ok=True)
        tree = tempfile.mkdtemp(prefix=".tree.", dir=os.path.dirname(out))
        try:
            stage(tree)
            _finish(tree, out, release, source)
        finally:
            shutil.rmtree(tree, ignore_errors=True)

    build_once(path, make, is_dir=True)
    return Kernel(release, path, source, dbg)


def _finish(tree: str, out: str, release: str, source: str) -> None:
    from .image import make_ext4
    vmlinuz = os.path.join(tree, "boot", f"vmlinuz-{release}")
    mods = os.path.join(tree, "lib", "modules", release)
    if not os.path.isfile(vmlinuz):
        raise VMError(f"the package holds no boot/vmlinuz-{release}")
    if not os.path.isdir(mods):
        raise VMError(f"the package holds no lib/modules/{release}")
    build = os.path.join(mods, "build")
    target = os.readlink(build) if os.path.islink(build) else None
    if target:
        target = (os.path.join(tree, target.lstrip("/")) if os.path.isabs(target)
                  else os.path.normpath(os.path.join(mods, target)))
    if not target or not os.path.isdir(target):
        raise VMError(f"no kernel headers for {release} in the inputs "
                      f"(lib/modules/{release}/build leads nowhere)")
    shutil.move(vmlinuz, os.path.join(out, "vmlinuz"))
    _depmod(tree, release)
    _initrd_modules(tree, release, os.path.join(out, "initrd"))
    make_ext4(tree, os.path.join(out, "kernel.img"), label="dbhive-kernel")
    info = {"release": release, "source": source,
            "headers": sorted(os.listdir(os.path.join(tree, "usr", "src"))),
            "has_config": os.path.exists(os.path.join(tree, "boot", f"config-{release}"))}
    with open(os.path.join(out, "kernel.json"), "w") as fh:
        json.dump(info, fh, indent=2)


def _kmod_tool(name: str) -> str:
    for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    found = shutil.which(name)
    if not found:
        raise VMError(f"{name} is not installed (apt-get install kmod)")
    return found


def _depmod(tree: str, release: str) -> None:
    p = subprocess.run([_kmod_tool("depmod"), "-b", tree, release], capture_output=True,
                       text=True)
    if p.returncode != 0:
        raise VMError(f"depmod failed for {release}: {p.stderr.strip()}")


def _initrd_modules(tree: str, release: str, dest: str) -> None:
    """Copy the initramfs's modules (and their dependencies, in load order) to DEST."""
    p = subprocess.run([_kmod_tool("modprobe"), "-d", tree, "-S", release, "--show-depends", "-a",
                        *INITRD_MODULES], capture_output=True, text=True)
    if p.returncode != 0:
        raise VMError(f"{release}: cannot resolve {', '.join(INITRD_MODULES)}: "
                      f"{p.stderr.strip()}")
    os.makedirs(dest)
    order = []
    for line in p.stdout.splitlines():
        words = line.split()
        if words[:1] == ["builtin"]:
            continue
        if words[:1] != ["insmod"] or len(words) < 2:
            raise VMError(f"unexpected modprobe output: {line}")
        name = os.path.basename(words[1])
        if name not in order:
            shutil.copy(words[1], os.path.join(dest, name))
            order.append(name)
    with open(os.path.join(dest, "load.list"), "w") as fh:
        fh.write("\n".join(order) + "\n")
