"""Quirks of particular kernels, distros and tools, each named and explained in one place
(as cilium/ebpf keeps its workarounds.go).  The code that depends on one imports it from
here, so `grep quirks.` finds every place a quirk shapes behaviour.

Go toolchain quirks are in resolver/golang/quirks.py.
"""
from __future__ import annotations

import re

# --- kernel identity -------------------------------------------------------------------------

# Debug-flavour kernels.  Fedora/RHEL ship a separate debug kernel whose types differ from the
# normal one's (lockdep, KASAN members): `kernel-debug-debuginfo` packages, releases ending in
# `+debug` (RHEL 8+) or `.debug` (RHEL 7).  A debug kernel must never stand for a normal one
# (surftrace's builder named its DB after the package and lost the distinction).
DEBUG_RELEASE = re.compile(r"(^|[+._-])debug($|[+._-])")
DEBUG_FILE_SUFFIX = "+debug"          # what the hive appends when the release does not say so


def release_says_debug(release: str) -> bool:
    return bool(DEBUG_RELEASE.search(release or ""))


def package_says_debug(package_name: str) -> bool:
    """`kernel-debug-debuginfo`, `kernel-debug-core`, ..."""
    return "debug" in (package_name or "").split("-")


# init_uts_ns: `struct uts_namespace` starts with the utsname on 5.x+, and follows a kref
# (4 bytes, 8 with padding) on older kernels.
UTS_NS_UTSNAME_OFFSETS = (0, 4, 8)

# GNU build-id notes: only notes owned by "GNU" count — the kernel's Xen notes reuse note
# type 3 (NT_GNU_BUILD_ID) for XEN_ELFNOTE_ENTRY.
BUILD_ID_NOTE_OWNER = b"GNU"

# --- DWARF -----------------------------------------------------------------------------------

ET_REL = 1


def needs_debug_relocations(e_type: int) -> bool:
    """A linked vmlinux (ET_EXEC) built with --emit-relocs keeps .rela.debug_* sections whose
    contents are already applied: applying them again costs minutes and changes nothing.
    Only relocatable objects (ET_REL: kernel modules) need their debug relocations applied."""
    return e_type == ET_REL

# --- packages --------------------------------------------------------------------------------

def link_data_in_last_entry(package_kind: str) -> bool:
    """cpio (RPM payloads) keeps a hard-link set's data in the set's *last* entry, tar (.deb)
    in its *first*: a wanted empty cpio entry waits for the rest of its set."""
    return package_kind == "rpm"
