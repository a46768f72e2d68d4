#!/usr/bin/env bash
# Set up what a job needs on a fresh Debian machine (root) and run it:
#   ./dev.sh demo   build the DB of the running kernel from its own BTF, show some offsets, and
#                   (root + bcc) prove that DB on the live kernel: tracer verify --ignore-btf
#   ./dev.sh test   run the test suite (downloads and caches real packages); CI runs this
#   ./dev.sh sweep  the exhaustive sweeps left out of `test` (tests marked `sweep`: every Go
#                   toolchain, ...); slow
# The demo installs only what the demo needs (scripts/apt-demo.txt, the package itself);
# the tests add scripts/apt-test.txt and the test extras.
set -euo pipefail
cd "$(dirname "$0")"
job="${1:-demo}"; shift || true

setup() {       # $1: demo | test
    local lists=scripts/apt-demo.txt extras=""
    if [ "$1" = test ]; then lists="scripts/apt-demo.txt scripts/apt-test.txt"; extras="[test]"; fi
    local stamp=".venv/.setup-$1"
    local want
    want=$(cat $lists pyproject.toml | sha256sum | cut -c1-16)
    # the C extensions are built by pip into the checkout: a checkout that lacks one (a pull or
    # switch across the commit that added it or stopped tracking it) is set up again
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
       compgen -G "dbhive/dwarf/_cscan*.so" >/dev/null &&
       compgen -G "dbhive/btf/_cbtf*.so" >/dev/null &&
       compgen -G "dbhive/_cmodel*.so" >/dev/null &&
       compgen -G "dbhive/_cbulk*.so" >/dev/null; then return; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        cat $lists | grep -v '^#' | xargs apt-get -o DPkg::Lock::Timeout=600 install -y -qq >/dev/null
    fi
    [ -x .venv/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv
    # the surftrace client (a test extra) ships a `kobuild` script of its own (it uploads .ko
    # files to a remote server): the project is installed again last, so .venv/bin/kobuild is ours
    if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e ".$extras" &&
           { [ -z "$extras" ] || .venv/bin/pip install -q --no-deps --force-reinstall -e .; }; } \
            > .venv/setup.log 2>&1; then
        cat .venv/setup.log >&2; echo "dev.sh: pip install failed" >&2; exit 1
    fi
    echo "$want" > "$stamp"
}

# bcc compiles against the kernel headers at /lib/modules/$(uname -r)/build.  A kernel with no
# headers package of its own (this project's CI kernel) gets Debian's 6.1 headers, which
# scripts/apt-demo.txt installs: the tracer's programs include no kernel struct headers,
# only what bcc's own helpers need.
kernel_headers() {
    local base="/lib/modules/$(uname -r)"
    local hdr=/usr/src/linux-headers-6.1.0-47-cloud-amd64 common=/usr/src/linux-headers-6.1.0-47-common
    [ -e "$base/build" ] && return 0
    if [ "$(id -u)" != 0 ] || [ ! -d "$hdr" ]; then return 0; fi
    mkdir -p "$base"
    ln -sfn "$hdr" "$base/build"
    [ -e "$base/source" ] || ln -sfn "$common" "$base/source"
    echo "dev.sh: $base/build was missing: linked it to $hdr (and source to $common) for bcc" >&2
}

# why the tracer cannot run here (empty when it can)
tracer_unavailable() {
    .venv/bin/python -c 'from tracer.kernel import bpf_available as b; print(b() or "")'
}

case "$job" in
    demo)
        setup demo
        hive="${DBHIVE_HOME:-$PWD/hive}"
        .venv/bin/dbhive build /sys/kernel/btf/vmlinux --hive "$hive" "$@"
        .venv/bin/dbhive list --hive "$hive"
        .venv/bin/resolver offset --hive "$hive" task_struct.files sock.__sk_common.skc_family \
            file.f_path.dentry dentry.d_name.name
        # BTF -> DB -> maps -> proof: the tracer fills its maps from the DB just built (as on a
        # kernel without BTF) and checks every offset on the live kernel, Go side included.
        why=$(tracer_unavailable)
        if [ -n "$why" ]; then
            echo "dev.sh: skipping 'tracer verify --ignore-btf': $why"
        else
            kernel_headers
            probe=$(.venv/bin/python -c 'from tests.support.go_builds import binary
print(binary("1.19", "tracerprobe", "strip"))' 2>/dev/null) || probe=""
            [ -n "$probe" ] || echo "dev.sh: no Go toolchain: tracer verify runs without its Go checks"
            .venv/bin/tracer verify --ignore-btf --hive "$hive" ${probe:+--go-probe "$probe"}
        fi
        ;;
    test|sweep)
        setup test
        kernel_headers
        if [ "$job" = test ]; then marks="not sweep"; else marks="sweep"; fi
        exec .venv/bin/python -m pytest -q -p no:cacheprovider -m "$marks" "$@"
        ;;
    *)
        echo "usage: ./dev.sh demo|test|sweep [args]" >&2; exit 2 ;;
esac
