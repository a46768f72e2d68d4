"""`dbhive fetch`, `dbhive batch`, `dbhive index` (registered in dbhive/cli.py)."""
from __future__ import annotations

import json
import os
import signal
import sys

import click

from .. import cliutil, hive as hivemod
from ..errors import EXIT_INTERRUPTED, PackageFailures

HIVE_HELP = "Hive directory (default: $DBHIVE_HOME, else /var/lib/dbhive as root, " \
            "~/.local/share/dbhive otherwise)."


def _fail(message, code=None):
    cliutil.fail("dbhive", message, code)


def _table(rows: list) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


# ----------------------------------------------------------------------------- batch

@click.command()
@click.option("--hive", "hive", default=None, help=HIVE_HELP)
@click.option("--jobs", "-j", type=int, default=None,
              help="Packages built at once (default: one per CPU; fewer when memory or "
                   "scratch disk is short, said once).")
@click.option("--workers", "-w", type=int, default=None,
              help="DWARF processes per build (default: CPUs / jobs).")
@click.option("--shard", default=None, metavar="I/N",
              help="Build only shard I of N (a stable hash of each package's path).")
@click.option("--shards", type=int, default=None, metavar="N",
              help="N shards, this one's index from $JOB_COMPLETION_INDEX (Kubernetes "
                   "Indexed Job).")
@click.option("--distro", "distros", multiple=True, help="Only <hive>/<arch>/pack/DISTRO.")
@click.option("--arch", "arches", multiple=True, help="Only <hive>/ARCH/pack.")
@click.option("--retry-failed", is_flag=True, help="Build packages that failed before again.")
@click.option("--with-btf", is_flag=True,
              help="Also write each kernel's BTF (emitted from its types when it has none) and "
                   "btfhub's <release>.btf.tar.xz into <hive>/<arch>/btf/ (as dbhive build "
                   "--with-btf).")
@click.option("--with-header", "--with-headers", "with_header", is_flag=True,
              help="Also write each kernel's C header (vmlinux.h, as bpftool btf dump ... "
                   "format c) to <hive>/<arch>/head/<distro>/<release>.h; for a DB already "
                   "built it is written from the DB.")
@click.option("--keep-vmlinux", is_flag=True,
              help="Keep each package's extracted vmlinux in <hive>/<arch>/vmlinux/.")
@click.option("--memory", default=None, metavar="SIZE",
              help="Memory the builds may use together, e.g. 8G (default: what is available "
                   "now, cgroup limits included).")
@click.option("--scratch", default=None, metavar="DIR",
              help="Where packages are extracted (default: $TMPDIR or /tmp).")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the outcome of every package as JSON on stdout.")
def batch(hive, jobs, workers, shard, shards, distros, arches, retry_failed, with_btf,
          with_header, keep_vmlinux, memory, scratch, progress, as_json):
    """Build the DB of every package under <hive>/<arch>/pack/<distro>/ into
    <hive>/<arch>/db/<distro>/: resumable (what is complete is skipped), failures recorded
    per package, identical kernels built once, sharded for a job engine.

    \b
    Examples:
      dbhive batch --hive ./hive --jobs 2
      dbhive batch --hive ./hive --shard 1/4 --json
      dbhive batch --hive /hive --shards 4          # in a Kubernetes Indexed Job
      dbhive batch --hive ./hive --retry-failed --distro debian
      dbhive batch --hive ./hive --with-btf --with-header   # BTF and vmlinux.h too
    """
    from . import pack, run
    from .resources import cpu_count, parse_size
    if shard and shards:
        _fail("give --shard I/N or --shards N, not both")
    if jobs is not None and jobs < 1 or workers is not None and workers < 1:
        _fail("--jobs and --workers must be at least 1")
    hive = hive or hivemod.default_hive()
    if not os.path.isdir(hive):
        _fail(f"{hive}: no such hive directory")
    where = shard and pack.parse_shard(shard) or (pack.shard_from_env(shards) if shards
                                                   else None)
    if scratch and not os.path.isdir(scratch):
        _fail(f"--scratch {scratch}: no such directory")
    if progress is None:
        progress = sys.stderr.isatty()
    opts = run.Options(hive=hive, jobs=jobs or cpu_count(), workers=workers, shard=where,
                       arches=arches, distros=distros, retry_failed=retry_failed,
                       keep_vmlinux=keep_vmlinux, scratch=scratch, with_btf=with_btf,
                       with_header=with_header,
                       memory=parse_size(memory) if memory else None)
    view = _BatchView(progress)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        result = run.run(opts, report=view.report, warn=lambda m: cliutil.warn("dbhive", m),
                         started=view.start)
    except KeyboardInterrupt:         # before any build started
        view.close()
        _fail("interrupted before any package was built", EXIT_INTERRUPTED)
    view.close()
    counts = result.counts()
    if as_json:
        click.echo(json.dumps({
            "hive": hive, "shard": where and f"{where[0]}/{where[1]}", "jobs": result.jobs,
            "workers": result.workers, "seconds": round(result.seconds, 1),
            "interrupted": result.interrupted, "counts": counts,
            "packages": [o.__dict__ for o in result.outcomes]}, indent=2))
    else:
        _summary(result, counts, where)
    if result.interrupted:
        _fail(f"interrupted: {len(result.outcomes)} of {result.packages} packages done; "
              f"run it again to go on", EXIT_INTERRUPTED)
    failed = counts[run.records.FAILED] + counts[run.FAILED_EARLIER]
    if failed:
        raise PackageFailures(f"{failed} of {result.packages} packages failed (reasons above; "
                              f"--retry-failed builds them again)")



class _BatchView:
    """One bar for the batch, one status line per package (on stderr)."""

    def __init__(self, progress: bool):
        self.progress, self.bar = progress, None

    def start(self, n: int) -> None:
        if self.progress:
            from tqdm import tqdm
            self.bar = tqdm(total=n, unit="pkg", desc="batch", file=sys.stderr,
                            dynamic_ncols=True)

    def report(self, o) -> None:
        detail = {"built": f"-> {o.db}", "skipped": f"= {o.db}",
                  "alias": f"same kernel as {o.alias_of or o.db}"}.get(o.status,
                                                                     _short(o.reason, o.package))
        if o.head and o.status in ("built", "skipped"):
            detail += f" + {o.head}"
        kernel = o.release or "-"
        line = f"{o.status:<14} {o.package}  {kernel}"
        if o.type_source:
            line += f" ({o.type_source})"
        if o.status in ("built", "failed", "alias") and o.seconds:
            line += f" {o.seconds:.1f}s"
        line += f"  {detail}"
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
            self.bar.update(1)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _short(reason: str, package: str) -> str:
    """A failure's reason without the package path it starts with (the line names it)."""
    head, sep, rest = reason.partition(": ")
    return rest if sep and head.endswith(package) else reason


def _summary(result, counts: dict, where) -> None:
    rows = [("STATUS", "PACKAGES")] + [(s, n) for s, n in counts.items()]
    rows.append(("total", result.packages))
    for line in _table(rows):
        click.echo(line)
    scope = f"shard {where[0]}/{where[1]}, " if where else ""
    click.echo(f"({scope}{result.jobs} job(s) x {result.workers} DWARF worker(s), "
               f"{result.seconds:.0f} s)")
    failed = [o for o in result.outcomes if o.status in ("failed", "failed-earlier")]
    if failed:
        click.echo("")
        for line in _table([("FAILED", "REASON")] + [(o.package, _short(o.reason, o.package))
                                                 for o in failed]):
            click.echo(line)


# ----------------------------------------------------------------------------- index

@click.command()
@click.option("--hive", "hive", default=None, help=HIVE_HELP)
@click.option("--out", default=None, metavar="FILE", help="Also write the manifest (JSON) here.")
@click.option("--diff", "old", default=None, metavar="MANIFEST",
              help="Print what changed since an earlier manifest (JSON) instead.")
@click.option("--verify", is_flag=True,
              help="Read every input and output again instead of trusting recorded sha256s.")
@click.option("--json", "as_json", is_flag=True, help="The manifest (or the diff) as JSON.")
def index(hive, out, old, verify, as_json):
    """The manifest of a hive: per package its sha256, status (built, alias, failed,
    stale, pending), kernel (release, arch, build-id) and outputs (DB, BTF, their sha256);
    DBs no package accounts for too.  Sorted and free of times: two diff cleanly.

    \b
    Examples:
      dbhive index --hive ./hive
      dbhive index --hive ./hive --json --out manifest.json
      dbhive index --hive ./hive --diff published/manifest.json
    """
    from .. import output
    from . import index as idx
    hive = hive or hivemod.default_hive()
    if not os.path.isdir(hive):
        _fail(f"{hive}: no such hive directory")
    if out:
        output.check_destination(out, must_exist_dir=True)
    before = idx.load(old) if old else None
    man = idx.manifest(hive, verify=verify)
    if out:
        output.write_bytes(out, (json.dumps(man, indent=1, sort_keys=True) + "\n").encode(),
                           must_exist_dir=True, mode=0o644)
    if before is not None:
        d = idx.diff(before, man)
        if as_json:
            click.echo(json.dumps(d, indent=1, sort_keys=True))
        else:
            for line in idx.diff_lines(d):
                click.echo(line)
        return
    if as_json:
        click.echo(json.dumps(man, indent=1, sort_keys=True))
    else:
        for line in idx.text_lines(man):
            click.echo(line)


# ----------------------------------------------------------------------------- fetch

@click.command()
@click.argument("repository", type=click.Choice(["debian"]))
@click.option("--suite", "suites", multiple=True, required=True,
              help="Suite(s) to look in: bookworm, bullseye, bookworm-security, ...")
@click.option("--arch", "arches", multiple=True, default=("amd64",), show_default=True,
              help="Debian architecture(s).")
@click.option("--flavour", "flavours", multiple=True,
              help="Kernel flavour(s): cloud, rt, amd64 (generic), cloud-amd64, ...")
@click.option("--release", "releases", multiple=True, metavar="GLOB",
              help="Only kernel releases matching GLOB, e.g. '6.1.0-5*-cloud-amd64'.")
@click.option("--latest", type=int, default=None, metavar="N",
              help="Only the newest N versions of each flavour.")
@click.option("--component", "components", multiple=True, default=("main",), show_default=True)
@click.option("--mirror", default=None, metavar="URL",
              help="Archive for normal suites (default http://deb.debian.org/debian).")
@click.option("--security-mirror", default=None, metavar="URL",
              help="Archive for *-security suites (default http://deb.debian.org/debian-security).")
@click.option("--keyring", default=None, metavar="FILE",
              help="Keyring the InRelease signatures are checked against "
                   "(default /usr/share/keyrings/debian-archive-keyring.gpg).")
@click.option("--list", "list_only", is_flag=True, help="List what would be fetched; download nothing.")
@click.option("--hive", "hive", default=None, help=HIVE_HELP)
@click.option("--progress/--no-progress", default=None,
              help="Download progress bars (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="The packages as JSON.")
def fetch(repository, suites, arches, flavours, releases, latest, components, mirror,
          security_mirror, keyring, list_only, hive, progress, as_json):
    """List and download the kernel debuginfo packages (linux-image-<release>-dbg) of a
    Debian-style repository into <hive>/<arch>/pack/debian/, verified against the signed
    index: InRelease checked with gpgv against the archive keyring, the Packages index and
    every package checked against the sizes and SHA256s it gives.  The only command that
    uses the network.

    \b
    Examples:
      dbhive fetch debian --suite bookworm --flavour cloud --list
      dbhive fetch debian --suite bookworm --suite bullseye --flavour cloud --latest 1 --hive ./hive
      dbhive fetch debian --suite bookworm --release 6.1.0-47-cloud-amd64 --hive ./hive --json
    """
    from . import debian
    if latest is not None and latest < 1:
        _fail("--latest must be at least 1")
    hive = hive or hivemod.default_hive()
    if progress is None:
        progress = sys.stderr.isatty()
    cache = os.path.join(hive, ".fetch")
    found = []
    for suite in suites:
        repo = debian.Repository(suite, security_mirror if suite.endswith("-security")
                                 else mirror, keyring or debian.KEYRING, cache)
        for arch in arches:
            found += debian.kernel_packages(repo, arch, components, flavours, releases)
    pkgs = debian.select(found, latest)
    for p in pkgs:
        dest = debian.destination(hive, p)
        p.file = os.path.relpath(dest, hive)
        if os.path.exists(dest) and debian.file_matches(dest, p.size, p.sha256):
            p.status = "present"
    if not list_only:
        for p in pkgs:
            if p.status == "present":
                continue
            _download(debian, hive, p, progress)
    if as_json:
        click.echo(json.dumps([p.as_json() for p in pkgs], indent=2))
        return
    if not pkgs:
        click.echo("no kernel debuginfo packages match", err=True)
        return
    rows = [("PACKAGE", "VERSION", "SUITE", "MB", "STATUS", "FILE")]
    rows += [(p.package, p.version, p.suite, f"{p.size / 1e6:.0f}", p.status, p.file)
             for p in pkgs]
    for line in _table(rows):
        click.echo(line)


def _download(debian, hive: str, p, progress: bool) -> None:
    dest = os.path.join(hive, p.file)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=p.size, unit="B", unit_scale=True, desc=os.path.basename(dest),
                   file=sys.stderr, leave=False)
    else:
        click.echo(f"downloading {p.url} ({p.size / 1e6:.0f} MB)", err=True)
    try:
        debian.fetch_verified(p.url, dest, p.size, p.sha256, bar.update if bar else None)
    except KeyboardInterrupt:
        _fail("interrupted; the partial download was removed", EXIT_INTERRUPTED)
    finally:
        if bar is not None:
            bar.close()
    p.status = "downloaded"


__all__ = ["batch", "index", "fetch"]
