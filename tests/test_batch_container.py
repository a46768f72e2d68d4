"""containers/: the real image built from containers/Dockerfile by podman (on a Debian base
made by debootstrap), its entrypoint run over a mounted mini-hive with no network, the DBs it
writes checked against DBs built on the host; the Dockerfile linted by hadolint and the
Kubernetes manifest validated against Kubernetes' schemas."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from scripts.realdata import DEBIAN_RELEASE
from tests.support.container import ROOT, builder_image, podman
from tests.support.minihive import BTFHUB_DIR, BTFHUB_RELEASE, db_digest, make_pack
from tests.support.resolver_dbs import _key

BIN = os.path.dirname(sys.executable)
DOCKERFILE = os.path.join(ROOT, "containers", "Dockerfile")
MANIFEST = os.path.join(ROOT, "containers", "k8s", "batch-job.yaml")
K8S_VERSIONS = ("1.29.0", "1.33.0")     # backoffLimitPerIndex: beta in 1.29, GA in 1.33


def host_dwarf_db(debian_vmlinux: str) -> str:
    """The host's `dbhive build` of the Debian vmlinux (the DB the resolver tests check
    against pahole; same cache entry)."""
    from scripts.realdata import CACHE
    dest = os.path.join(CACHE, "resolver-dbs", f"dwarf-{_key(debian_vmlinux, 'dwarf')}.db")
    if not os.path.exists(dest):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        subprocess.run([os.path.join(BIN, "dbhive"), "build", debian_vmlinux, "--source",
                        "dwarf", "--out", dest, "--no-progress"], check=True,
                       capture_output=True, timeout=1800)
    return dest


def test_dockerfile_passes_hadolint_and_a_bad_one_does_not(tmp_path):
    hadolint = os.path.join(BIN, "hadolint")
    proc = subprocess.run([hadolint, DOCKERFILE], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(DOCKERFILE) as fh:
        text = fh.read()
    bad = tmp_path / "Dockerfile"
    bad.write_text(text.replace("# hadolint ignore=DL3008\n", "").replace(
        "ARG BASE=debian:bookworm-slim", "ARG BASE=debian"))
    proc = subprocess.run([hadolint, str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3008" in proc.stdout


def test_k8s_manifest_is_a_valid_indexed_job(tmp_path):
    validate = os.path.join(BIN, "kubernetes-validate")
    for version in K8S_VERSIONS:
        proc = subprocess.run([validate, "--strict", "-k", version, MANIFEST],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(MANIFEST) as fh:
        docs = list(yaml.safe_load_all(fh))
    job = next(d for d in docs if d["kind"] == "Job")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == int(args[args.index("--shards") + 1])   # N of the shards
    assert spec["backoffLimitPerIndex"] >= 1 and pod["restartPolicy"] == "Never"
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailIndex" and rule["onExitCodes"]["values"] == [8]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    claim = next(v for v in pod["volumes"] if v["name"] == mounts["/hive"])
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert claim["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]          # one volume, N pods
    # the validator fails on a wrong manifest: a misspelt field, a wrong type
    for before, after in (("backoffLimitPerIndex: 2", "backofLimitPerIndex: 2"),
                          ("completions: 4", "completions: four")):
        bad = tmp_path / "bad.yaml"
        with open(MANIFEST) as fh:
            bad.write_text(fh.read().replace(before, after))
        proc = subprocess.run([validate, "--strict", "-k", K8S_VERSIONS[0], str(bad)],
                              capture_output=True, text=True)
        assert proc.returncode != 0, before


@pytest.fixture(scope="module")
def image():
    return builder_image()


def test_image_entrypoint_is_dbhive_batch_on_hive(image):
    info = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert info["Entrypoint"] == ["dbhive", "batch", "--hive", "/hive"]
    assert "/hive" in info.get("Volumes", {})
    proc = podman("run", "--rm", "--network", "none", image, "--help")
    assert "Build the DB of every package under <hive>/<arch>/pack/<distro>/" in proc.stdout


def test_batch_in_the_container_over_a_mounted_hive(image, tmp_path, batch_inputs,
                                                    debian_vmlinux, running_db, debian_db):
    """No network; the DBs it writes are the ones the host builds of the same kernels."""
    hive = tmp_path / "hive"
    rpm = f"x86_64/pack/fedora/{os.path.basename(batch_inputs.rpm)}"
    raw = f"x86_64/pack/btf/{os.uname().release}.btf"
    hub = f"x86_64/pack/{BTFHUB_DIR}/{BTFHUB_RELEASE}.btf.tar.xz"
    make_pack(str(hive), batch_inputs, how="hardlink", only={rpm, raw, hub})
    run = ["run", "--rm", "--network", "none", "-v", f"{hive}:/hive", image]
    proc = podman(*run, "--jobs", "2", "--json", check=False, timeout=3600)
    assert proc.returncode == 0, proc.stderr
    out = {p["package"]: p for p in json.loads(proc.stdout)["packages"]}
    assert {k: v["status"] for k, v in out.items()} == {rpm: "built", raw: "built",
                                                        hub: "built"}
    dbs = {k: os.path.join(hive, v["db"]) for k, v in out.items()}
    assert dbs[rpm].endswith(f"x86_64/db/fedora/info-{DEBIAN_RELEASE}.db")
    assert db_digest(dbs[rpm]) == db_digest(host_dwarf_db(debian_vmlinux))
    assert db_digest(dbs[raw]) == db_digest(running_db)
    assert db_digest(dbs[hub]) == db_digest(debian_db)
    assert out[rpm]["type_source"] == "dwarf"
    # resumable in the container too: a second run builds nothing
    proc = podman(*run, "--json", check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert {p["status"] for p in json.loads(proc.stdout)["packages"]} == {"skipped"}
    # the records name packages by their place in the hive, not the container's mount
    state = hive / "x86_64" / "state" / "fedora" / (os.path.basename(rpm) + ".json")
    assert json.loads(state.read_text())["package"] == rpm
    shutil.rmtree(hive)
