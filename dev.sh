#!/usr/bin/env bash
# Set up what a job needs on a fresh Debian machine (root) and run it:
#   ./dev.sh demo   build the DB of the running kernel from its own BTF, show some offsets
#   ./dev.sh test   run the whole test suite (downloads and caches real packages)
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
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        cat $lists | grep -v '^#' | xargs apt-get -o DPkg::Lock::Timeout=600 install -y -qq >/dev/null
    fi
    [ -x .venv/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv
    if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e ".$extras"; } \
            > .venv/setup.log 2>&1; then
        cat .venv/setup.log >&2; echo "dev.sh: pip install failed" >&2; exit 1
    fi
    echo "$want" > "$stamp"
}

case "$job" in
    demo)
        setup demo
        hive="${DBHIVE_HOME:-$PWD/hive}"
        .venv/bin/dbhive build /sys/kernel/btf/vmlinux --hive "$hive" "$@"
        .venv/bin/dbhive list --hive "$hive"
        .venv/bin/resolver offset --hive "$hive" task_struct.files sock.__sk_common.skc_family \
            file.f_path.dentry dentry.d_name.name
        ;;
    test)
        setup test
        exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
        ;;
    *)
        echo "usage: ./dev.sh demo|test [args]" >&2; exit 2 ;;
esac
