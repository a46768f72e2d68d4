"""Shared fixtures: real inputs, downloaded once and cached between runs (scripts/realdata.py).
Helpers that tests import live in tests/support/."""
from __future__ import annotations

import os

import pytest

from scripts import realdata
from scripts.realdata import RUNNING_BTF


@pytest.fixture(scope="session", autouse=True)
def tracefs_mounted():
    """bcc's uprobes and libbpf's tracepoints (the tests that use them directly, not through
    the tracer, which mounts it itself) need tracefs, which a freshly booted machine may not
    have mounted: mounted once, as root, as the tracer would."""
    if os.geteuid() == 0:
        from dbhive.errors import SetupError
        from resolver.tracefs import tracefs_dir
        try:
            tracefs_dir("events")
        except SetupError:
            pass                # the tests that need it say so themselves


@pytest.fixture(scope="session")
def debian_dbg_deb() -> str:
    """The real Debian kernel debuginfo package (281 MB)."""
    return realdata.fetch_deb(realdata.DEBIAN_DBG_PKG)


@pytest.fixture(scope="session")
def debian_vmlinux(debian_dbg_deb) -> str:
    """The vmlinux (DWARF 5 + .BTF) from the Debian debuginfo package."""
    return realdata.debian_vmlinux()


@pytest.fixture(scope="session")
def debian_vmlinux_btf(debian_vmlinux) -> str:
    """The raw .BTF section of the Debian vmlinux (objcopy, independent of our ELF code)."""
    return realdata.debian_vmlinux_btf()


@pytest.fixture(scope="session")
def running_btf() -> str:
    if not os.path.exists(RUNNING_BTF):
        pytest.fail(f"{RUNNING_BTF} is missing: this machine's kernel should expose its BTF")
    return RUNNING_BTF


@pytest.fixture(scope="session")
def running_db(running_btf) -> str:
    """A DB of the running kernel's BTF (cached by tests/support/resolver_dbs.py)."""
    from tests.support.resolver_dbs import build_btf_db, running_meta
    return build_btf_db(running_btf, running_meta())


@pytest.fixture(scope="session")
def debian_db(debian_vmlinux_btf) -> str:
    """A DB of the Debian 6.1 kernel's BTF (cached by tests/support/resolver_dbs.py)."""
    from tests.support.resolver_dbs import build_btf_db, debian_meta
    return build_btf_db(debian_vmlinux_btf, debian_meta())


# ---- the tracer's: a hive built by the real builder, the Go test programs ----------------

@pytest.fixture(scope="session")
def running_hive(tmp_path_factory):
    """A hive holding the running kernel's DB, built by `dbhive build` from its BTF."""
    import subprocess
    import sys
    hive = tmp_path_factory.mktemp("tracer-hive")
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "dbhive"), "build",
                    RUNNING_BTF, "--hive", str(hive)], check=True, capture_output=True,
                   timeout=300)
    return str(hive)


@pytest.fixture(scope="session")
def running_db_file(running_hive):
    found = [os.path.join(d, f) for d, _, fs in os.walk(running_hive) for f in fs
             if f.endswith(".db")]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="session")
def probe_124():
    from tests.support.go_builds import binary
    return binary("1.24", "tracerprobe", "dwarf")


@pytest.fixture(scope="session")
def probe_119_strip():
    from tests.support.go_builds import binary
    return binary("1.19", "tracerprobe", "strip")


@pytest.fixture(scope="session")
def probe_115():
    """tracerprobe built by Go 1.15 (stack ABI, g in TLS on amd64): Debian bullseye's
    golang-1.15, fetched by scripts/go_toolchains.py like every other toolchain."""
    from tests.support.go_builds import binary
    return binary("1.15", "tracerprobe", "dwarf")


# ---- the batch's: the real mini-hive ------------------------------------------------------

@pytest.fixture(scope="session")
def batch_inputs(debian_dbg_deb, debian_vmlinux_btf, running_btf):
    """The real inputs of the batch tests' mini-hive (tests/support/minihive.py)."""
    from tests.support import minihive
    from tests.support.rpms import make_rpms
    second = minihive.fetch_second_deb()
    return minihive.Inputs(deb47=debian_dbg_deb, deb2=second["path"],
                           release2=second["release"],
                           rpm=make_rpms("big")["big.zstd"], raw_btf=running_btf,
                           btfhub=minihive.btfhub_archive(debian_vmlinux_btf))
