"""Batch hive generation: many packages -> many DBs, unattended, resumable, sharded.

    <hive>/<arch>/pack/<distro>/...   inputs (any file `dbhive build` takes; sub-directories too)
    <hive>/<arch>/db/<distro>/        the DBs (`dbhive build`'s layout), BTF in <arch>/btf/,
                                      C headers in <arch>/head/<distro>/ (--with-header)
    <hive>/<arch>/state/<distro>/...  one small JSON record per package: its sha256, what
                                      became of it (built, alias, failed), reason, time

Modules:
  pack      which packages a hive holds, their stable identity and shard
  records   the per-package records (written atomically, one file each: shards on a shared
            volume never write the same file)
  resources how many builds fit at once (memory, disk, CPUs; cgroup limits included)
  run       the scheduler: one forked process per package running `dbhive.build.build`
  index     the hive's manifest (release, arch, build-id, sha256 of inputs and outputs,
            status, aliases) and the diff of two manifests
  debian    Debian-style repositories: signed index files and verified downloads (`fetch`,
            the only networked command)
  cli       the `dbhive fetch`, `dbhive batch` and `dbhive index` commands
"""
