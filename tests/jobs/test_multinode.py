"""The crop job on a real multi-node Ray cluster: one head and two worker nodes started with
``ray start`` on this machine, the job submitted with ``ray job submit``, inputs and outputs on
the SeaweedFS S3 server.

- ``test_job_on_two_worker_nodes``: the job succeeds, its output is complete, and its crop
  tasks ran on both worker nodes (Ray's state API: the node of every ``crop_units`` task).
- ``test_worker_node_killed_mid_job``: a second run into a new output, during which one worker
  node's raylet and every process under it get SIGKILL once shards are committed and the run is
  not; the job still commits, and its output equals the undisturbed run's.

The head has no CPUs, so every task runs on a worker node; each worker node has one CPU. Ray
refuses a second node on one machine unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``, and then it
advertises the machine's own interface address rather than 127.0.0.1: the nodes talk to each
other through that address, which is still this machine. Everything else (the S3 server, the
dashboard and job API) is on 127.0.0.1.

The cluster's processes are found by session: each ``ray start --block`` runs in its own session
(``start_new_session``), and every process Ray starts for that node stays in it (the job's driver
too is a descendant). Teardown kills exactly those processes, never ``ray stop`` (machine-wide),
so the test session's own local Ray (the ``ray_cluster`` fixture) is untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.conftest import LOOPBACK, S3Server, free_loopback_ports
from tests.jobs import corpus
from tests.jobs.test_reliability import (
    DYNAMIC_JSON,
    FAULT_CROPS,
    FAULT_SHARDS,
    Fault,
    Output,
    Snapshot,
    assert_same_output,
    committed_snapshot,
    mid_job,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
RUN_ID = "multinode-run"  # the same for both runs, so crop ids and shard names compare
WORKERS = ("worker-1", "worker-2")
START_TIMEOUT_S = 90.0
JOB_TIMEOUT_S = 150.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.2
# The name of the job's crop task (Ray Data titles it ``MapBatches(crop_units)``).
CROP_TASK = "crop_units"
# Custom resources name each worker node, so a node id from Ray maps back to our processes.
NODE_RESOURCE = "cropcore_multinode_{}"

RAY_CLUSTER_ENV = {
    # Without it a second node on this machine is refused ("Multi-node Ray clusters are not
    # supported"); with it Ray advertises the machine's interface address (still this machine).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    # A killed node is declared dead after about 3 s instead of the default 15-20 s
    # (read by the GCS at start; Ray system config from the environment).
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    # as cluster.yaml sets it: idle workers kept per node (3 per CPU)
    "RAY_num_workers_soft_limit": "3",
}


def kill_and_wait(processes: list[psutil.Process]) -> None:
    """SIGKILL each process (one already gone is skipped) and wait for them to end."""
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=STOP_TIMEOUT_S)


def ray_env() -> dict[str, str]:
    """The environment of the ``ray start`` and ``ray job`` commands: this session's, minus any
    Ray settings and S3 credentials (the job gets those only through its runtime env, as on a
    real cluster), with AWS clients pointed at a closed loopback port."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "AWS_")) and k != "PYTHONPATH"}
    env.update(RAY_CLUSTER_ENV)
    env.update({"AWS_ENDPOINT_URL": f"http://{LOOPBACK}:1", "AWS_EC2_METADATA_DISABLED": "true"})
    return env


# -- the cluster ---------------------------------------------------------------------------------
@dataclass
class Node:
    """One ``ray start --block`` process, the leader of its own session."""

    name: str
    temp_dir: Path
    log_path: Path
    process: subprocess.Popen

    def processes(self) -> list[psutil.Process]:
        """Every live process of this node: its session, and everything under it."""
        found: dict[int, psutil.Process] = {}
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == self.process.pid:
                    found[process.pid] = process
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        for process in list(found.values()):
            try:
                found.update((c.pid, c) for c in process.children(recursive=True))
            except psutil.Error:
                continue
        return list(found.values())

    def raylet(self) -> psutil.Process:
        for process in self.processes():
            try:
                if Path(process.exe()).name == "raylet":
                    return process
            except psutil.Error:
                continue
        raise AssertionError(f"no raylet process for node {self.name}; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"


@dataclass
class MultiNodeCluster:
    root: Path
    gcs_address: str
    dashboard_url: str
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def start_node(self, name: str, arguments: list[str]) -> Node:
        temp_dir = self.root / name
        log_path = self.root / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [RAY, "start", "--block", "--disable-usage-stats", f"--node-ip-address={LOOPBACK}",
                 f"--temp-dir={temp_dir}", *arguments],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, temp_dir, log_path, process)
        self.nodes.append(node)
        return node

    def alive_nodes(self) -> list[dict]:
        from ray.util.state import list_nodes

        # Filtered server-side, Ray 2.60 reports the dead nodes left out as "truncation".
        nodes = [n if isinstance(n, dict) else n.__dict__
                 for n in list_nodes(address=self.dashboard_url, timeout=10, detail=True,
                                     raise_on_missing_output=False)]
        return [n for n in nodes if n["state"] == "ALIVE"]

    def worker_node_ids(self) -> dict[str, str]:
        """``{node_id: worker name}`` of the live worker nodes."""
        ids = {}
        for node in self.alive_nodes():
            for name in WORKERS:
                if NODE_RESOURCE.format(name) in (node.get("resources_total") or {}):
                    ids[node["node_id"]] = name
        return ids

    def wait_for_workers(self, count: int) -> dict[str, str]:
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process.poll() is not None:
                    raise AssertionError(f"ray start for {node.name} exited with code "
                                         f"{node.process.returncode}; log:\n{node.log_tail()}")
            try:
                ids = self.worker_node_ids()
                if len(ids) == count:
                    return ids
            except Exception as error:  # noqa: BLE001 - the dashboard is still starting
                last_error = error
            time.sleep(1.0)
        logs = "\n".join(f"--- {n.name}:\n{n.log_tail()}" for n in self.nodes)
        raise AssertionError(f"{count} worker nodes did not join within {START_TIMEOUT_S:.0f} s "
                             f"(last error: {last_error!r}); logs:\n{logs}")

    def stop(self) -> None:
        """SIGKILL every process of every node (all found first, so none escapes by being
        re-parented), then reap the ``ray start`` processes."""
        for _ in range(3):
            victims = [p for node in self.nodes for p in node.processes()]
            if not victims:
                break
            kill_and_wait(victims)
        for node in self.nodes:
            try:
                node.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        left = [p.pid for node in self.nodes for p in node.processes()]
        assert not left, f"cluster processes still running after teardown: {left}"

    # -- jobs ------------------------------------------------------------------------------------
    def ray_job(self, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command, *rest = arguments
        return subprocess.run([RAY, "job", command, "--address", self.dashboard_url, *rest],
                              env=self.env, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)

    def submit(self, s3: S3Server, *job_arguments: str, entrypoint: tuple = ("-m", "jobs")) -> str:
        """Submit ``python -m jobs <job_arguments>`` without waiting; returns its id."""
        submission_id = f"cropjob-{uuid.uuid4().hex[:12]}"
        runtime_env = {"env_vars": s3.env()}
        result = self.ray_job(
            "submit", "--no-wait", "--submission-id", submission_id, "--working-dir", str(REPO),
            "--runtime-env-json", json.dumps(runtime_env), "--",
            sys.executable, *entrypoint, *job_arguments, timeout=120)
        assert result.returncode == 0, f"ray job submit failed:\n{result.stdout}\n{result.stderr}"
        return submission_id

    def logs(self, submission_id: str) -> str:
        try:
            result = self.ray_job("logs", submission_id, timeout=60)
        except subprocess.TimeoutExpired:
            return "(ray job logs timed out)"
        return result.stdout + result.stderr

    def wait(self, submission_id: str, succeed: bool = True) -> dict:
        """Wait for the job to end; fail with its logs unless it succeeded (or, with
        ``succeed=False``, failed). Returns its info."""
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(self.dashboard_url)
        deadline = time.monotonic() + JOB_TIMEOUT_S
        status = None
        while time.monotonic() < deadline:
            status = client.get_job_status(submission_id)
            if status.is_terminal():
                break
            time.sleep(POLL_S)
        info = client.get_job_info(submission_id)
        if status != (JobStatus.SUCCEEDED if succeed else JobStatus.FAILED):
            if not status.is_terminal():
                client.stop_job(submission_id)
            raise AssertionError(
                f"job {submission_id} ended as {status} (message: {info.message}) "
                f"within {JOB_TIMEOUT_S:.0f} s; ray job logs:\n{self.logs(submission_id)}")
        return {"job_id": info.job_id, "logs": self.logs(submission_id)}


def start_cluster(root: Path) -> MultiNodeCluster:
    head_ports = free_loopback_ports(7)
    gcs, dashboard, client, agent, agent_grpc, metrics, runtime_env = head_ports
    cluster = MultiNodeCluster(root=root, gcs_address=f"{LOOPBACK}:{gcs}",
                               dashboard_url=f"http://{LOOPBACK}:{dashboard}", env=ray_env())
    try:
        cluster.start_node("head", [
            "--head", f"--port={gcs}", "--num-cpus=0", "--include-dashboard=true",
            f"--dashboard-host={LOOPBACK}", f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}", "--object-store-memory=200000000"])
        for name in WORKERS:
            agent, agent_grpc, metrics, runtime_env = free_loopback_ports(4)
            cluster.start_node(name, [
                f"--address={cluster.gcs_address}", "--num-cpus=1",
                f"--resources={json.dumps({NODE_RESOURCE.format(name): 1})}",
                f"--dashboard-agent-listen-port={agent}",
                f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
                "--object-store-memory=200000000"])
        cluster.wait_for_workers(len(WORKERS))
    except BaseException:
        cluster.stop()
        raise
    return cluster


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multinode(s3_server: S3Server) -> Iterator[MultiNodeCluster]:
    # Short: Ray's Unix socket paths under the temp dir must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="cropmn-", dir="/tmp"))
    cluster = start_cluster(root)
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh bucket holding the fault dataset under ``in/``, shared by this module's tests."""
    name = f"t-multinode-{uuid.uuid4().hex[:12]}"
    filesystem = s3_server.pyarrow_fs()
    filesystem.create_dir(name)
    corpus.write_fault_dataset(f"{name}/in", filesystem=filesystem)
    yield name
    if s3_server.running:
        try:
            filesystem.delete_dir(name)
        except OSError:
            pass


def job_arguments(bucket: str, output: str) -> list[str]:
    return ["run", "--images", f"s3://{bucket}/in/images", "--detections",
            f"s3://{bucket}/in/detections", "--output", f"s3://{bucket}/{output}",
            "--step", DYNAMIC_JSON, "--run-id", RUN_ID, "--rows-per-shard", "1"]


def crop_task_nodes(cluster: MultiNodeCluster, job_id: str) -> dict[str, int]:
    """``{node_id: number of crop tasks}`` of one job, from Ray's state API (task events
    reach it about a second after the tasks run, so this waits a little for both nodes)."""
    from ray.util.state import list_tasks

    deadline = time.monotonic() + 30
    while True:
        tasks = list_tasks(address=cluster.dashboard_url, filters=[("job_id", "=", job_id)],
                           limit=10_000, timeout=30, raise_on_missing_output=False)
        counts: dict[str, int] = {}
        for task in tasks:
            task = task if isinstance(task, dict) else task.__dict__
            if CROP_TASK in task["name"] and task.get("node_id"):
                counts[task["node_id"]] = counts.get(task["node_id"], 0) + 1
        if len(counts) >= len(WORKERS) or time.monotonic() > deadline:
            return counts
        time.sleep(1.0)


@pytest.fixture(scope="module")
def undisturbed(multinode, s3_server, bucket) -> dict:
    """The first run, on both worker nodes: its snapshot and where its crop tasks ran."""
    submission_id = multinode.submit(s3_server, *job_arguments(bucket, "reference"))
    info = multinode.wait(submission_id)
    output = Output(s3_server.pyarrow_fs(), f"{bucket}/reference")
    return {"snapshot": committed_snapshot(output), "output": output,
            "nodes": crop_task_nodes(multinode, info["job_id"]), "logs": info["logs"]}


def assert_summary(logs: str) -> None:
    """The CLI's summary, printed by the job's driver, is in ``ray job logs``."""
    assert re.search(rf"^run\s+{RUN_ID} \(committed\)$", logs, re.M), logs
    assert re.search(rf"^crops\s+{FAULT_CROPS}$", logs, re.M), logs


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- tests ---------------------------------------------------------------------------------------
def test_job_on_two_worker_nodes(multinode, undisturbed):
    snapshot: Snapshot = undisturbed["snapshot"]
    manifest = undisturbed["output"].manifest()
    assert manifest["status"] == "committed"
    assert manifest["run_id"] == RUN_ID
    assert len(manifest["shards"]) == FAULT_SHARDS
    assert snapshot.crops.num_rows == FAULT_CROPS == manifest["counts"]["crops"]
    assert undisturbed["output"].table("errors") is None
    assert_summary(undisturbed["logs"])
    # Work ran on both worker nodes and nowhere else (the head has no CPUs).
    workers = multinode.worker_node_ids()
    nodes = undisturbed["nodes"]
    assert set(nodes) == set(workers), (
        f"crop_units tasks ran on {nodes}; worker nodes are {workers}")


NODES_MISSING_SCRIPT = """
import json, sys
import ray
from jobs.raycompat import nodes_missing
ray.init()
print("missing:", json.dumps(nodes_missing(sys.argv[1:])))
"""


def test_local_paths_a_node_does_not_see_are_found_and_relative_ones_refused(
        multinode, s3_server, bucket):
    # Every node of this cluster shares the machine's disk: only the absent path is missing,
    # once per node that runs tasks (not the head, which has no CPUs).
    absent = f"/tmp/cropcore-absent-{uuid.uuid4().hex}"
    submission_id = multinode.submit(s3_server, str(REPO), absent,
                                     entrypoint=("-c", NODES_MISSING_SCRIPT))
    logs = multinode.wait(submission_id)["logs"]
    missing = json.loads(re.search(r"^missing: (.*)$", logs, re.M).group(1))
    assert sorted(path for _, path in missing) == [absent] * len(WORKERS), logs
    # The driver runs in Ray's copy of --working-dir, which Ray deletes after the job: a
    # relative --output there used to be written into it (and split across nodes).
    arguments = job_arguments(bucket, "unused")
    arguments[arguments.index("--output") + 1] = "crops-relative"
    logs = multinode.wait(multinode.submit(s3_server, *arguments), succeed=False)["logs"]
    assert "--output crops-relative is a relative path, and this job runs in Ray's temporary " \
        "copy of --working-dir" in logs, logs


def test_worker_node_killed_mid_job(multinode, s3_server, bucket, undisturbed):
    output = Output(s3_server.pyarrow_fs(), f"{bucket}/node-killed")
    workers = multinode.worker_node_ids()
    assert len(workers) == len(WORKERS), workers

    def kill_a_busy_worker_node() -> dict | None:
        """SIGKILL the raylet of a worker node running a crop task, and everything under it."""
        for name in WORKERS:
            node = multinode.node(name)
            raylet = node.raylet()
            tree = [raylet, *raylet.children(recursive=True)]
            titles = []
            for process in tree:
                try:
                    titles.append(" ".join(process.cmdline()))
                except psutil.Error:
                    continue
            if not any(CROP_TASK in title for title in titles):
                continue  # this node is not cropping right now
            markers, manifest = output.count_markers(), output.has_manifest()
            kill_and_wait(tree)
            return {"node": name, "pids": [p.pid for p in tree], "markers": markers,
                    "manifest": manifest}
        return None  # between tasks: try again at the next poll

    submission_id = multinode.submit(s3_server, *job_arguments(bucket, "node-killed"))
    try:
        with Fault(mid_job(output), kill_a_busy_worker_node, timeout_s=JOB_TIMEOUT_S) as fault:
            multinode.wait(submission_id)
    finally:
        logs = multinode.logs(submission_id)
    assert fault.result is not None, f"no node was killed: the job finished first\n{logs}"
    assert fault.result["markers"] < FAULT_SHARDS and not fault.result["manifest"], fault.result
    assert not any(alive(pid) for pid in fault.result["pids"]), fault.result
    survivors = multinode.worker_node_ids()
    assert fault.result["node"] not in survivors.values(), survivors
    assert len(survivors) == len(WORKERS) - 1, survivors
    assert_summary(logs)
    assert_same_output(output, undisturbed["snapshot"])
