"""The deployment configs parse and pass Ray's own validation, offline (no cloud calls).

``cluster.yaml`` goes through the same steps ``ray up`` takes before it talks to AWS:
``prepare_config`` (merge with the AWS defaults, fill per-type worker limits) and
``validate_config`` (Ray's JSON schema plus its cross-field checks). Both are private Ray APIs;
Ray is pinned, so a change in them shows up here when the pin moves.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
RAYJOB_YAML = ROOT / "deploy" / "kuberay-rayjob.yaml"


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared_config(cluster_config) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster_config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def rayjob() -> dict:
    documents = [d for d in yaml.safe_load_all(RAYJOB_YAML.read_text()) if d]
    jobs = [d for d in documents if d.get("kind") == "RayJob"]
    assert len(jobs) == 1, f"expected one RayJob in {RAYJOB_YAML}, found {len(jobs)}"
    return jobs[0]


def test_cluster_config_passes_ray_validation(prepared_config):
    assert prepared_config["cluster_name"] == "cropcore"
    assert prepared_config["provider"]["type"] == "aws"
    assert prepared_config["provider"]["region"] == "us-west-2"


def test_cluster_config_rejects_what_ray_rejects(cluster_config):
    # Guards the test itself: validation must be strict enough to fail on a broken config.
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(cluster_config)
    broken["available_node_types"]["cpu_worker"]["not_a_field"] = 1

    with pytest.raises(jsonschema.ValidationError, match="not_a_field"):
        validate_config(prepare_config(broken))


def test_head_does_no_work(prepared_config):
    head_type = prepared_config["head_node_type"]
    head = prepared_config["available_node_types"][head_type]

    assert head["resources"] == {"CPU": 0}
    assert head["max_workers"] == 0


def test_cpu_workers_autoscale_from_zero(prepared_config):
    workers = prepared_config["available_node_types"]["cpu_worker"]

    assert workers["min_workers"] == 0
    assert workers["max_workers"] == 16
    assert prepared_config["max_workers"] >= workers["max_workers"]
    assert workers["node_config"]["InstanceType"] == "m7i.2xlarge"
    assert prepared_config["idle_timeout_minutes"] > 0


def test_cluster_installs_this_checkout(prepared_config):
    assert prepared_config["file_mounts"] == {"~/cropcore": "."}
    assert prepared_config["docker"] == {}
    installs = [c for c in prepared_config["setup_commands"] if "pip install" in c]
    assert any("-e" in c and "cropcore" in c for c in installs)
    # Setup commands run on both node kinds.
    for kind in ("head_setup_commands", "worker_setup_commands"):
        assert all(c in prepared_config[kind] for c in prepared_config["setup_commands"])


def test_rayjob_shape(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = cluster["workerGroupSpecs"]
    assert len(groups) >= 1
    assert all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in groups)


def test_rayjob_entrypoint_runs_the_crop_job(rayjob):
    entrypoint = rayjob["spec"]["entrypoint"]
    arguments = entrypoint.split()

    assert entrypoint.startswith("python -m jobs run")
    for flag in ("--images", "--detections", "--output"):
        assert arguments[arguments.index(flag) + 1].startswith("s3://")
    assert arguments[arguments.index("--step") + 1].startswith("@/")


def test_rayjob_step_file_is_mounted_on_the_head(rayjob):
    step_path = Path(rayjob["spec"]["entrypoint"].split("--step @", 1)[1].split()[0])
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = [m["mountPath"] for c in head["containers"] for m in c.get("volumeMounts", [])]

    assert str(step_path.parent) in mounts
