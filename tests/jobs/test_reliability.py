"""Reliability of the crop job: bad inputs, killed workers, a restarted S3 server, a killed
driver, and what the job never does (turn data into paths, leak credentials).

Faults are injected from events, never from timers: a thread (or the test) polls the output
for shard markers and strikes once some exist and the manifest does not, and every test asserts
that its fault was actually injected mid-job. The fault dataset (``corpus.fault_tables``) is
sized so that a run takes seconds on 2 cores, with 40 shards committing one by one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from cropcore.codec import DEFAULT_MAX_PIXELS, decode_image
from jobs import steps
from jobs.pipeline import JobConfig, run
from jobs.sinks import read_shard_index
from jobs.storage import Location
from tests.jobs import corpus
from tests.jobs.builders import detections_table, image_pixels, images_table, png, write_parquet

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DYNAMIC_JSON = '{"type": "roboflow_core/dynamic_crop@v1"}'
DYNAMIC = steps.parse_step(DYNAMIC_JSON)
STATIC = steps.parse_step({"type": "roboflow_core/absolute_static_crop@v1", "x_center": 20,
                           "y_center": 16, "width": 16, "height": 12})
FAULT_RUN_ID = "reliability-fault-run"
FAULT_SHARDS = corpus.FAULT_IMAGES  # rows_per_shard=1: one shard per image
FAULT_CROPS = corpus.FAULT_IMAGES * corpus.FAULT_DETECTIONS_PER_IMAGE
POLL_S = 0.02
STAGES = {"missing_id": "plan", "duplicate_detection_id": "plan", "image_missing": "plan",
          "duplicate_image_id": "plan", "too_many_detections": "plan", "invalid_box": "crop",
          "empty_window": "crop", "no_image_bytes": "read", "fetch_failed": "read",
          "undecodable": "decode", "too_many_pixels": "decode"}


# -- reading an output, local or on S3 -----------------------------------------------------------
@dataclass(frozen=True)
class Output:
    """A job output folder in a pyarrow filesystem."""

    fs: pafs.FileSystem
    root: str

    @classmethod
    def local(cls, path) -> Output:
        return cls(pafs.LocalFileSystem(), str(path))

    def files(self) -> list[str]:
        """Every file under the root, as paths relative to it."""
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return sorted(i.path[len(self.root.rstrip("/")) + 1 :] for i in infos if i.is_file)

    def read(self, relative: str) -> bytes:
        with self.fs.open_input_stream(f"{self.root}/{relative}") as stream:
            return stream.read()

    def count_markers(self) -> int:
        selector = pafs.FileSelector(f"{self.root}/_shards", allow_not_found=True)
        return sum(i.path.endswith(".json") for i in self.fs.get_file_info(selector))

    def has_manifest(self) -> bool:
        info = self.fs.get_file_info(f"{self.root}/_manifest.json")
        return info.type != pafs.FileType.NotFound

    def manifest(self) -> dict:
        """The manifest, with ``shards`` read from the Parquet index files it lists."""
        manifest = json.loads(self.read("_manifest.json"))
        location = Location(self.fs, self.root.rstrip("/"), self.root)
        return manifest | {"shards": list(read_shard_index(location, manifest))}

    def table(self, kind: str) -> pa.Table | None:
        parts = [pq.read_table(pa.BufferReader(self.read(f))) for f in self.files()
                 if f.startswith(f"{kind}/") and f.endswith(".parquet")]
        return pa.concat_tables(parts, promote_options="permissive") if parts else None


@dataclass(frozen=True)
class Snapshot:
    """What must be identical between runs: every crop row, and lineage without ``created_at``."""

    crops: pa.Table
    lineage: pa.Table


def committed_snapshot(output: Output) -> Snapshot:
    """Check ``output`` is committed with nothing stray, and return its crops and lineage."""
    manifest = output.manifest()
    assert manifest["status"] == "committed"
    listed = {f["path"] for shard in manifest["shards"] for f in shard["files"]}
    files = output.files()
    data_files = {f for f in files if f.split("/")[0] in ("crops", "lineage", "errors")}
    assert data_files == listed, "data files on storage must be exactly the committed ones"
    markers = {f"_shards/{shard['shard']}.json" for shard in manifest["shards"]}
    # a marker's temporary file survives a worker killed while writing it (local disks only;
    # readers never look at it)
    index = set(manifest["index"])
    others = {f for f in set(files) - data_files - markers - index
              if not re.fullmatch(r"_shards/[0-9a-f]{24}\.json\.tmp-[0-9a-f]{48}", f)}
    assert others == {"_manifest.json", "_claim.json"}, others
    crops = output.table("crops").sort_by("crop_id")
    lineage = output.table("lineage").drop_columns(["created_at"]).sort_by("crop_id")
    ids = crops["crop_id"].to_pylist()
    assert len(ids) == len(set(ids)), "duplicate crops"
    assert lineage["crop_id"].to_pylist() == ids
    assert manifest["counts"]["crops"] == len(ids)
    return Snapshot(crops, lineage)


def assert_same_output(output: Output, reference: Snapshot) -> None:
    snapshot = committed_snapshot(output)
    assert snapshot.crops.num_rows == reference.crops.num_rows == FAULT_CROPS
    assert snapshot.crops["crop_id"].to_pylist() == reference.crops["crop_id"].to_pylist()
    assert snapshot.crops.equals(reference.crops), "crop rows differ from the undisturbed run"
    assert snapshot.lineage.equals(reference.lineage), "lineage differs from the undisturbed run"
    assert output.table("errors") is None


# -- fault injection ---------------------------------------------------------------------------
class Fault:
    """Runs ``act`` once in a thread, as soon as ``ready()`` holds; ``act`` may decline (return
    None) and is then tried again at the next poll. Used as a context manager around the job;
    on exit it stops polling, waits for an action in progress, and re-raises its error."""

    def __init__(self, ready: Callable[[], bool], act: Callable[[], dict | None],
                 timeout_s: float = 180.0):
        self.ready, self.act, self.timeout_s = ready, act, timeout_s
        self.result: dict | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="fault", daemon=True)

    def _poll(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if self.ready():
                    self.result = self.act()
                    if self.result is not None:
                        return
                time.sleep(POLL_S)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            self.error = error

    def __enter__(self) -> Fault:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "the fault action did not finish"
        if self.error is not None:
            raise self.error


def mid_job(output: Output, at_least: int = 2) -> Callable[[], bool]:
    """True once ``at_least`` shards are committed and the run is not."""
    return lambda: output.count_markers() >= at_least and not output.has_manifest()


def busy_crop_workers() -> list[psutil.Process]:
    """Ray workers of this test session's cluster that are running the crop UDF right now (Ray
    titles a worker with the task it runs: ``ray::MapBatches(crop_units)``)."""
    busy = []
    for process in psutil.Process().children(recursive=True):
        try:
            title = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if title.startswith("ray::") and "crop_units" in title:
            busy.append(process)
    return busy


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fault_inputs(tmp_path_factory) -> tuple[str, str]:
    return corpus.write_fault_dataset(str(tmp_path_factory.mktemp("fault-inputs")))


def fault_config(inputs: tuple[str, str], output: str, **settings) -> JobConfig:
    images, detections = inputs
    return JobConfig(images=images, detections=detections, output=output, step=DYNAMIC,
                     run_id=FAULT_RUN_ID, rows_per_shard=1, **settings)


@pytest.fixture(scope="module")
def fault_reference(ray_cluster, fault_inputs, tmp_path_factory) -> Snapshot:
    """The fault dataset's output from an undisturbed run."""
    output = Output.local(tmp_path_factory.mktemp("fault-reference") / "out")
    summary = run(fault_config(fault_inputs, output.root))
    assert (summary.crops, summary.error_count, summary.shards) == (FAULT_CROPS, 0, FAULT_SHARDS)
    return committed_snapshot(output)


# -- 1. bad inputs -------------------------------------------------------------------------------
def outcomes(output: Output, key: str) -> Counter:
    """``Counter((id, outcome))`` from an output: ``CROP`` for crops, the reason for errors."""
    found = Counter()
    crops, errors = output.table("crops"), output.table("errors")
    for row in crops.to_pylist() if crops is not None else []:
        found[row[key], corpus.CROP] += 1
    for row in errors.to_pylist() if errors is not None else []:
        if key == "detection_id" and row["reason"] == "duplicate_image_id":
            continue  # an image row, not a detection: checked on its own
        found[row[key], row["reason"]] += 1
        assert row["stage"] == STAGES[row["reason"]], row
        assert row["message"], row
    return found


def assert_crops_are_exact(output: Output) -> None:
    """Every crop is the decoded source image's pixels inside the lineage window."""
    sources = {c.image_id: c.data for c in corpus.image_cases()}
    lineage = {r["crop_id"]: r for r in output.table("lineage").to_pylist()}
    for row in output.table("crops").to_pylist():
        window = lineage[row["crop_id"]]
        expected = decode_image(sources[row["image_id"]])[
            window["window_y_min"] : window["window_y_max"],
            window["window_x_min"] : window["window_x_max"]]
        np.testing.assert_array_equal(decode_image(row["crop"]["bytes"]), expected)


def test_bad_inputs_become_error_rows_with_specific_reasons(ray_cluster, tmp_path):
    images, detections = corpus.write_corpus(tmp_path / "in")
    output = Output.local(tmp_path / "out")
    summary = run(JobConfig(images=images, detections=detections, output=output.root,
                            step=DYNAMIC, rows_per_shard=2))
    expected = corpus.expected_detection_outcomes()
    assert outcomes(output, "detection_id") == expected
    # crops plus error rows account for every detection row, and the summary agrees
    n_detections = corpus.detections_table().num_rows
    assert sum(expected.values()) == n_detections == summary.detections
    assert summary.crops == expected_crops(expected)
    assert summary.crops + summary.error_count == n_detections + 1  # + the duplicate image row
    errors = output.table("errors").to_pylist()
    (duplicate,) = [r for r in errors if r["reason"] == "duplicate_image_id"]
    # the skipped row itself, the last of the images file: the user can find it
    assert duplicate["image_id"] == "good"
    assert duplicate["source_uri"] == \
        f"{Path(images, 'part-0.parquet')}#row={len(corpus.image_cases())}"
    bomb = next(r for r in errors if r["image_id"] == "bomb")
    assert "100000 x 100000" in bomb["message"]
    assert f"max_pixels={DEFAULT_MAX_PIXELS}" in bomb["message"]
    assert summary.images == len(corpus.image_cases())  # the duplicate row is not an image
    assert summary.images_without_detections == 1  # "no-detections": never decoded
    enormous = next(r for r in output.table("crops").to_pylist()
                    if r["detection_id"] == "good/enormous")
    assert (enormous["width"], enormous["height"]) == corpus.SIZE_WH  # clamped to the image
    assert_crops_are_exact(output)
    committed_snapshot(output)


def expected_crops(expected: Counter) -> int:
    return sum(n for (_, outcome), n in expected.items() if outcome == corpus.CROP)


def test_pixel_and_detection_limits_are_configurable(ray_cluster, tmp_path):
    images, detections = corpus.write_corpus(tmp_path / "in")
    output = Output.local(tmp_path / "out")
    summary = run(JobConfig(images=images, detections=detections, output=output.root,
                            step=DYNAMIC, max_pixels=corpus.SMALL_MAX_PIXELS, max_detections=2))
    expected = corpus.expected_detection_outcomes(small_limit=True, max_detections=2)
    assert outcomes(output, "detection_id") == expected
    assert summary.crops == 0 and output.table("crops").num_rows == 0
    good = next(r for r in output.table("errors").to_pylist() if r["detection_id"] == "good/ok")
    assert good["reason"] == "too_many_pixels"
    assert f"max_pixels={corpus.SMALL_MAX_PIXELS}" in good["message"]


@pytest.mark.parametrize("small_limit", [False, True], ids=["default-limit", "small-limit"])
def test_static_crop_accounts_for_every_image(ray_cluster, tmp_path, small_limit):
    images, _ = corpus.write_corpus(tmp_path / "in")
    output = Output.local(tmp_path / "out")
    max_pixels = corpus.SMALL_MAX_PIXELS if small_limit else DEFAULT_MAX_PIXELS
    summary = run(JobConfig(images=images, output=output.root, step=STATIC,
                            max_pixels=max_pixels))
    expected = corpus.expected_image_outcomes(small_limit=small_limit)
    assert outcomes(output, "image_id") == expected
    assert summary.crops + summary.error_count == len(corpus.image_cases()) + 1
    if not small_limit:
        assert_crops_are_exact(output)


def test_empty_detections_table(ray_cluster, tmp_path):
    write_parquet(images_table(3), tmp_path / "images.parquet")
    (tmp_path / "detections").mkdir()
    write_parquet(detections_table(0), tmp_path / "detections" / "part-0.parquet")
    output = Output.local(tmp_path / "out")
    summary = run(JobConfig(images=str(tmp_path / "images.parquet"),
                            detections=str(tmp_path / "detections"), output=output.root,
                            step=DYNAMIC))
    assert (summary.images, summary.images_without_detections, summary.images_decoded) == (3, 3, 0)
    assert (summary.detections, summary.crops, summary.error_count) == (0, 0, 0)
    assert output.manifest()["status"] == "committed"
    assert output.table("crops").num_rows == 0 and output.table("errors") is None


def test_empty_images_file_turns_every_detection_into_an_error(ray_cluster, tmp_path):
    (tmp_path / "images").mkdir()
    write_parquet(images_table(0).cast(images_table(1).schema),
                  tmp_path / "images" / "part-0.parquet")
    write_parquet(detections_table(2, 3), tmp_path / "detections.parquet")
    output = Output.local(tmp_path / "out")
    summary = run(JobConfig(images=str(tmp_path / "images"),
                            detections=str(tmp_path / "detections.parquet"),
                            output=output.root, step=DYNAMIC))
    assert (summary.images, summary.crops, summary.errors) == (0, 0, {"image_missing": 6})
    errors = output.table("errors")
    assert sorted(errors["detection_id"].to_pylist()) == sorted(
        detections_table(2, 3)["detection_id"].to_pylist())
    assert output.manifest()["status"] == "committed"


def cli(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs", *arguments], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "table, column",
    [
        # a box coordinate as text
        ("detections", "x_min"),
        # image ids as integers
        ("images", "image_id"),
    ],
)
def test_wrong_column_type_fails_before_any_work(tmp_path, table, column):
    images = images_table(2)
    detections = detections_table(2, 2)
    if table == "detections":
        detections = detections.set_column(
            detections.schema.get_field_index(column), column,
            pa.compute.cast(detections[column], pa.string()))
    else:
        images = images.set_column(images.schema.get_field_index(column), column,
                                   pa.array(range(images.num_rows), pa.int64()))
    write_parquet(images, tmp_path / "images.parquet")
    write_parquet(detections, tmp_path / "detections.parquet")
    output = tmp_path / "out"
    result = cli("run", "--images", str(tmp_path / "images.parquet"), "--detections",
                 str(tmp_path / "detections.parquet"), "--output", str(output),
                 "--step", DYNAMIC_JSON, "--num-cpus", "1", timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert f"'{column}'" in lines[0] and "got" in lines[0]
    assert result.stdout == ""
    assert not output.exists() or not any(output.iterdir())


# -- 2. a worker killed mid-job ------------------------------------------------------------------
def test_worker_killed_mid_job_is_retried_to_identical_output(
        ray_cluster, fault_inputs, fault_reference, tmp_path):
    output = Output.local(tmp_path / "out")

    def kill_busy_worker() -> dict | None:
        busy = busy_crop_workers()
        if not busy:
            return None  # between tasks: try again at the next poll
        committed, manifest = output.count_markers(), output.has_manifest()
        try:
            busy[0].send_signal(signal.SIGKILL)  # psutil checks it is still the same process
        except psutil.NoSuchProcess:
            return None
        return {"pid": busy[0].pid, "markers": committed, "manifest": manifest}

    with Fault(mid_job(output), kill_busy_worker) as fault:
        summary = run(fault_config(fault_inputs, output.root))
    assert fault.result is not None, "no worker was killed: the job finished first"
    assert fault.result["markers"] < FAULT_SHARDS and not fault.result["manifest"]
    assert not psutil.pid_exists(fault.result["pid"]) or psutil.Process(
        fault.result["pid"]).status() == psutil.STATUS_ZOMBIE
    assert (summary.crops, summary.error_count) == (FAULT_CROPS, 0)
    assert_same_output(output, fault_reference)


# -- 3. the S3 server restarted mid-write --------------------------------------------------------
def test_s3_server_restarted_mid_write(ray_cluster, s3_server, s3_bucket):
    fs = s3_server.pyarrow_fs()
    images, detections = corpus.write_fault_dataset(f"{s3_bucket}/in", filesystem=fs)
    inputs = (f"s3://{images}", f"s3://{detections}")
    run(fault_config(inputs, f"s3://{s3_bucket}/reference"))
    reference = committed_snapshot(Output(fs, f"{s3_bucket}/reference"))
    output = Output(fs, f"{s3_bucket}/out")

    def restart_server() -> dict:
        committed, manifest = output.count_markers(), output.has_manifest()
        s3_server.stop()
        time.sleep(2)
        s3_server.start()
        return {"markers": committed, "manifest": manifest, "up_at": time.monotonic()}

    failure = None
    with Fault(mid_job(output), restart_server) as fault:
        try:
            run(fault_config(inputs, f"s3://{s3_bucket}/out"))
        except Exception as error:  # noqa: BLE001 - reported below
            failure = error
        finished_at = time.monotonic()
    assert fault.result is not None, "the server was not restarted: the job finished first"
    assert fault.result["markers"] < FAULT_SHARDS and not fault.result["manifest"]
    # The outage lasts ~4 s plus up to ~6 s of 500s while the restarted server loads its
    # volumes; the S3 client's retries and the task's outlast it, so the job completes.
    # Without them it fails (cleanly: no manifest) and a rerun would resume it.
    assert failure is None, f"the job did not ride out the restart: {failure}"
    # A job cannot commit while the server is down: ending after the restart means the outage
    # hit it mid-job, rather than the job finishing while the server was shutting down.
    assert finished_at > fault.result["up_at"], "the job finished before the server went down"
    assert_same_output(output, reference)


def test_storage_error_in_a_task_is_retried_until_storage_heals(
        ray_cluster, fault_inputs, fault_reference, tmp_path):
    output = Output.local(tmp_path / "out")
    # A file where the lineage folder goes: every lineage write fails with a StorageError,
    # after the shard's crops file is written (crops come first).
    obstacle = tmp_path / "out" / "lineage"
    obstacle.parent.mkdir()
    obstacle.write_bytes(b"")
    first_inode: dict[Path, int] = {}

    def crops_file_rewritten() -> bool:
        """A shard's crops file replaced by a new one: its task failed and ran again."""
        for path in (tmp_path / "out" / "crops").glob("part-*.parquet"):
            try:
                inode = path.stat().st_ino
            except FileNotFoundError:
                continue
            if first_inode.setdefault(path, inode) != inode:
                return True
        return False

    def heal() -> dict:
        obstacle.unlink()
        return {"markers": output.count_markers()}

    # the obstacle is not the job's file: the run must be told it may write beside it
    with Fault(crops_file_rewritten, heal) as fault:
        summary = run(fault_config(fault_inputs, output.root, allow_foreign_files=True))
    assert fault.result == {"markers": 0}, "storage healed before any task was retried"
    assert (summary.crops, summary.error_count) == (FAULT_CROPS, 0)
    assert_same_output(output, fault_reference)


def test_storage_that_stays_broken_fails_cleanly_and_a_rerun_completes(
        ray_cluster, fault_inputs, fault_reference, tmp_path):
    output = Output.local(tmp_path / "out")
    obstacle = tmp_path / "out" / "lineage"
    obstacle.parent.mkdir()
    obstacle.write_bytes(b"")  # every lineage write fails, for good
    started = time.monotonic()
    with pytest.raises(Exception, match=r"StorageError: cannot write .*lineage/part-"):
        run(fault_config(fault_inputs, output.root, allow_foreign_files=True))
    # bounded: 4 attempts of the first failing task, backing off at most 2 + 4 + 8 s
    assert time.monotonic() - started < 60
    assert not output.has_manifest()
    obstacle.unlink()
    summary = run(fault_config(fault_inputs, output.root))
    assert (summary.crops, summary.error_count) == (FAULT_CROPS, 0)
    assert_same_output(output, fault_reference)


# -- 4. the driver killed mid-job, then rerun ----------------------------------------------------
def test_killed_driver_rerun_resumes_to_identical_output(
        ray_cluster, fault_inputs, fault_reference, tmp_path):
    import ray

    skip_if_code_version_moved()
    output = Output.local(tmp_path / "out")
    images, detections = fault_inputs
    # against this session's cluster, so the killed driver leaves no Ray processes of its own
    command = ["run", "--images", images, "--detections", detections, "--output", output.root,
               "--step", DYNAMIC_JSON, "--run-id", FAULT_RUN_ID, "--rows-per-shard", "1",
               "--address", ray.get_runtime_context().gcs_address]
    with open(tmp_path / "driver.log", "wb") as log:
        driver = subprocess.Popen([sys.executable, "-m", "jobs", *command], cwd=REPO,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not mid_job(output)() and driver.poll() is None and time.monotonic() < deadline:
                time.sleep(POLL_S)
            markers_at_kill = output.count_markers()
            log_text = (tmp_path / "driver.log").read_text
            assert driver.poll() is None, f"the driver ended before the kill:\n{log_text()}"
            children = psutil.Process(driver.pid).children(recursive=True)
            driver.send_signal(signal.SIGKILL)
        finally:
            driver.kill()
            driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL
    assert 2 <= markers_at_kill < FAULT_SHARDS
    assert not output.has_manifest()
    # nothing the driver started outlives it (its workers belong to the session's cluster)
    _, orphans = psutil.wait_procs(children, timeout=30)
    for orphan in orphans:
        orphan.kill()
    assert not orphans, f"the killed driver left processes behind: {orphans}"
    # Ray kills a dead driver's workers; wait for that so none writes during the rerun
    deadline = time.monotonic() + 60
    while busy_crop_workers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not busy_crop_workers()

    result = cli(*command)
    skip_if_code_version_moved()
    assert result.returncode == 0, result.stderr
    resumed = re.search(r"^resumed\s+(\d+) shards were already committed$", result.stdout,
                        re.MULTILINE)
    assert resumed, result.stdout
    assert markers_at_kill <= int(resumed.group(1)) < FAULT_SHARDS
    assert re.search(rf"^crops\s+{FAULT_CROPS}$", result.stdout, re.MULTILINE), result.stdout
    assert_same_output(output, fault_reference)


def skip_if_code_version_moved() -> None:
    """The code version (git HEAD) is part of a run's identity and of every crop id; the
    reference was cut in this process, the runs here are subprocesses. A commit to the checkout
    in between (not in CI, where HEAD stays put) would make them different runs."""
    from jobs.versions import code_version

    now = subprocess.run([sys.executable, "-c", "from jobs.versions import code_version; "
                          "print(code_version())"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    if now != code_version():
        pytest.skip(f"the checkout moved from {code_version()} to {now} during the session")


# -- 5. guarantees -------------------------------------------------------------------------------
HOSTILE_IDS = ["../../etc/passwd", "a/b", "..", "x\\y", "/absolute", "C:\\windows", "",
               "%2e%2e%2f", "_manifest.json", "crops/part-0.parquet", "~", "name\nwith newline"]
OUTPUT_FILE = re.compile(r"(crops|lineage|errors)/part-[0-9a-f]{24}\.parquet|"
                         r"_shards/[0-9a-f]{24}\.json|_manifest\.json|_claim\.json|"
                         r"_index/[0-9a-f]{16}-[0-9a-f]{24}\.parquet")


def test_ids_and_class_names_never_become_paths(ray_cluster, tmp_path):
    n = len(HOSTILE_IDS)
    (tmp_path / "in").mkdir()
    write_parquet(pa.table({"image_id": HOSTILE_IDS,
                            "image": [png(image_pixels(i)) for i in range(n)]}),
                  tmp_path / "in" / "images.parquet")
    write_parquet(pa.Table.from_pylist(
        [{"image_id": s, "detection_id": f"{s}/../{s}", "class_name": s,
          "x_min": 5.0, "y_min": 5.0, "x_max": 30.0, "y_max": 30.0} for s in HOSTILE_IDS]),
        tmp_path / "in" / "detections.parquet")
    # deep, so that a path climbing out of the output stays inside tmp_path, where we look
    output = Output.local(tmp_path / "deep" / "deeper" / "out")
    summary = run(JobConfig(images=str(tmp_path / "in" / "images.parquet"),
                            detections=str(tmp_path / "in" / "detections.parquet"),
                            output=output.root, step=DYNAMIC, rows_per_shard=3))
    assert (summary.crops, summary.error_count) == (n, 0)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(["in/images.parquet", "in/detections.parquet",
                              *(f"deep/deeper/out/{f}" for f in output.files())])
    for relative in output.files():
        assert OUTPUT_FILE.fullmatch(relative), relative
    crops = output.table("crops").to_pylist()
    assert sorted(c["image_id"] for c in crops) == sorted(HOSTILE_IDS)  # kept, as data
    assert sorted(c["class_name"] for c in crops) == sorted(HOSTILE_IDS)
    for crop in crops:
        assert crop["crop"]["path"] == f"{crop['crop_id']}.png"
        assert re.fullmatch(r"[0-9a-f]{32}", crop["crop_id"])


def test_credentials_never_reach_outputs_logs_or_errors(ray_cluster, s3_server, tmp_path):
    import ray

    secrets = {s3_server.access_key.encode(), s3_server.secret_key.encode()}
    # the job (a subprocess, and the cluster's workers) gets them from the environment
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == s3_server.secret_key
    fs = s3_server.pyarrow_fs()
    # A bucket of our own: the fixture's names hold "test", which is also the access key.
    bucket = f"leak-{uuid.uuid4().hex[:12]}"
    assert not any(secret in bucket.encode() for secret in secrets)
    fs.create_dir(bucket)
    try:
        uris = []
        for i in range(3):
            with fs.open_output_stream(f"{bucket}/objects/{i}.png") as stream:
                stream.write(png(image_pixels(i)))
            uris.append(f"s3://{bucket}/objects/{i}.png")
        uris.append("s3://missing-bucket/x")  # a fetch that fails
        write_parquet(pa.table({"image_id": ["a", "b", "c", "d"], "uri": uris}),
                      f"{bucket}/in/images.parquet", filesystem=fs)
        output = Output(fs, f"{bucket}/out")
        result = cli("-v", "run", "--images", f"s3://{bucket}/in/images.parquet",
                     "--output", f"s3://{bucket}/out", "--step", json.dumps(
                         {"type": "roboflow_core/absolute_static_crop@v1", "x_center": 20,
                          "y_center": 16, "width": 16, "height": 12}),
                     "--allow-uris", f"s3://{bucket}/objects/,s3://missing-bucket/",
                     "--address", ray.get_runtime_context().gcs_address)
        assert result.returncode == 0, result.stderr
        errors = output.table("errors").to_pylist()
        assert [(e["image_id"], e["reason"]) for e in errors] == [("d", "fetch_failed")]
        assert "s3://missing-bucket/x" in errors[0]["message"]
        scanned = {f: output.read(f) for f in output.files()}
        assert {"_manifest.json", "crops", "lineage", "errors", "_shards"} <= {
            f.split("/")[0] for f in scanned}
        scanned["stdout"] = result.stdout.encode()
        scanned["stderr"] = result.stderr.encode()
        scanned["error message"] = errors[0]["message"].encode()
        for name, data in scanned.items():
            for secret in secrets:
                assert secret not in data, f"{secret!r} found in {name}"
        # Ray's own logs hold this session's other tests' paths ("test" appears everywhere),
        # so only the secret key is looked for there.
        logs = Path(ray._private.worker._global_node.get_logs_dir_path())
        for path in logs.rglob("*"):
            if path.is_file():
                assert s3_server.secret_key.encode() not in path.read_bytes(), path
    finally:
        fs.delete_dir(bucket)


def test_bad_uris_become_error_rows_and_their_credentials_stay_out(ray_cluster, tmp_path):
    secrets = [b"AKIAFAKEKEYID", b"fake-secret-key", b"fake-password"]
    good = tmp_path / "good.png"
    good.write_bytes(png(image_pixels(0)))
    cases = {
        # an ordinary local file
        "good": (str(good), corpus.CROP),
        # credentials inside an S3 URL
        "s3-credentials": ("s3://AKIAFAKEKEYID:fake-secret-key@bucket/x.png", "fetch_failed"),
        # a password inside a file URL
        "file-password": ("file://user:fake-password@localhost/x.png", "fetch_failed"),
        # an S3 URL without a bucket
        "s3-no-bucket": ("s3:///x.png", "fetch_failed"),
        # a file that does not exist
        "missing": (str(tmp_path / "missing.png"), "fetch_failed"),
        # null
        "null": (None, "no_image_bytes"),
    }
    write_parquet(pa.table({"image_id": list(cases),
                            "uri": pa.array([uri for uri, _ in cases.values()], pa.string())}),
                  tmp_path / "images.parquet")
    output = Output.local(tmp_path / "out")
    run(JobConfig(images=str(tmp_path / "images.parquet"), output=output.root, step=STATIC,
                  allow_uris=(str(tmp_path),)))
    assert outcomes(output, "image_id") == Counter(
        (image_id, outcome) for image_id, (_, outcome) in cases.items())
    for name in output.files():
        data = output.read(name)
        for secret in secrets:
            assert secret not in data, f"{secret!r} found in {name}"


# -- 5. ownership, one writer, what a dataset may read (issue: reliability round 2) ---------------
def ray_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def small_inputs(root: Path, n_images: int = 4) -> tuple[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    write_parquet(images_table(n_images), root / "images.parquet")
    (root / "detections").mkdir(exist_ok=True)
    write_parquet(detections_table(n_images, 2, masks=False), root / "detections" / "d.parquet")
    return str(root / "images.parquet"), str(root / "detections")


def run_args(images: str, detections: str | None, output: str, *extra: str) -> list[str]:
    args = ["run", "--images", images, "--output", output, "--step", DYNAMIC_JSON, *extra]
    return args + (["--detections", detections] if detections else [])


def one_line_error(result: subprocess.CompletedProcess, match: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(match, lines[0]), lines[0]
    assert "Started a local Ray instance" not in result.stderr  # refused before Ray


def test_case_1_an_output_holding_other_data_is_refused_and_never_deleted(ray_cluster, tmp_path):
    images, detections = small_inputs(tmp_path / "in")
    out = tmp_path / "out"
    theirs = {"crops/my-photo.jpg": b"photo", "crops/sub/deep.parquet": b"PAR1",
              "errors/today.log": b"log", "lineage/notes.txt": b"notes"}
    for name, data in theirs.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    one_line_error(cli(*run_args(images, detections, str(out))),
                   r"holds files this job did not write \(crops/my-photo.jpg, crops/sub/deep."
                   r"parquet, errors/today.log and 1 more\).*--allow-foreign-files")
    one_line_error(cli("validate", *run_args(images, detections, str(out))[1:]),
                   r"holds files this job did not write")
    # allowed explicitly: the run commits beside them, and leaves every one as it was
    result = cli(*run_args(images, detections, str(out), "--allow-foreign-files",
                           "--address", ray_address()))
    assert result.returncode == 0, result.stderr
    for name, data in theirs.items():
        assert (out / name).read_bytes() == data, name
    manifest = Output.local(out).manifest()
    listed = {f["path"] for shard in manifest["shards"] for f in shard["files"]}
    assert not listed & set(theirs)
    assert all((out / path).is_file() for path in listed)


def test_case_2_and_3_inputs_and_output_may_not_overlap(tmp_path):
    data = tmp_path / "data"
    images, detections = small_inputs(data / "crops")
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    # input kept under the output
    one_line_error(cli(*run_args(images, detections, str(data))),
                   r"--images .* and --output .* overlap")
    # output inside the images folder (and through '..')
    one_line_error(cli(*run_args(str(data / "crops"), detections, str(data / "crops" / "out"))),
                   r"overlap")
    one_line_error(cli(*run_args(images, detections,
                                 str(data / "x" / ".." / "crops" / "detections" / "o"))),
                   r"--detections .* overlap")
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def s3_or_local(where: str, tmp_path: Path, request) -> tuple[Output, str]:
    if where == "local":
        return Output.local(tmp_path / "out"), str(tmp_path / "out")
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return Output(server.pyarrow_fs(), f"{bucket}/out"), f"s3://{bucket}/out"


def start_cli(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jobs", *arguments], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def assert_complete(output: Output) -> dict:
    """The output is one committed run: every file the manifest lists exists, with its sha256."""
    import hashlib

    manifest = output.manifest()
    assert manifest["status"] == "committed"
    for shard in manifest["shards"]:
        for entry in shard["files"]:
            assert hashlib.sha256(output.read(entry["path"])).hexdigest() == entry["sha256"]
    claim = json.loads(output.read("_claim.json"))
    assert claim["fingerprint"] == manifest["fingerprint"]
    return manifest


@pytest.mark.parametrize("where", ["local", "s3"])
def test_case_4_two_runs_with_other_settings_started_together(ray_cluster, tmp_path, where,
                                                              request):
    output, url = s3_or_local(where, tmp_path, request)
    images, detections = small_inputs(tmp_path / "in")
    runs = [start_cli(*run_args(images, detections, url, "--format", fmt, "--address",
                                ray_address())) for fmt in ("png", "jpeg")]
    results = [(p.wait(timeout=600), *p.communicate()) for p in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code == 2)
    assert re.search(r"(belongs to|was claimed by) run run-\w+", loser), loser
    manifest = assert_complete(output)
    winner = "png" if results[0][0] == 0 else "jpeg"
    assert manifest["format"] == winner
    # a rerun of the loser is refused, saying what differs; the winner's rerun does nothing
    loser_format = {"png": "jpeg", "jpeg": "png"}[winner]
    one_line_error(cli(*run_args(images, detections, url, "--format", loser_format)),
                   r"committed, with other settings \(format\)")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_case_4_the_same_run_started_twice_is_idempotent(ray_cluster, tmp_path, where, request):
    output, url = s3_or_local(where, tmp_path, request)
    images, detections = small_inputs(tmp_path / "in", n_images=8)
    runs = [start_cli(*run_args(images, detections, url, "--rows-per-shard", "1", "--address",
                                ray_address())) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in runs]
    assert [code for code, _, _ in results] == [0, 0], results
    manifest = assert_complete(output)
    assert manifest["counts"]["crops"] == 16
    crops = output.table("crops")
    assert crops.num_rows == 16 and len(set(crops["crop_id"].to_pylist())) == 16
    created = set(output.table("lineage")["created_at"].to_pylist())
    assert len(created) == 1  # both starts wrote the run's one time, from the claim
    # A start that finds the run committed (meanwhile, or already) removes the work files it
    # made: a slower start used to leave its _work/ behind for good.
    work = output.manifest()["fingerprint"][:16]
    leftover = [f"_work/{work}/_paired.json", f"_work/{work}/units/unit-0.parquet"]
    for relative in leftover:
        if where == "local":
            (tmp_path / "out" / relative).parent.mkdir(parents=True, exist_ok=True)
        output.fs.open_output_stream(f"{output.root}/{relative}").close()
    assert cli(*run_args(images, detections, url, "--rows-per-shard", "1")).returncode == 0
    assert not [f for f in output.files() if f.startswith("_work/") and not f.endswith("/")]


def test_case_5_a_uri_table_needs_an_allow_list(tmp_path):
    write_parquet(pa.table({"image_id": ["a"], "uri": ["/etc/passwd"]}),
                  tmp_path / "images.parquet")
    for command in ("run", "validate"):
        one_line_error(cli(command, "--images", str(tmp_path / "images.parquet"), "--output",
                           str(tmp_path / "out"), "--step", json.dumps(
                               {"type": STATIC.type, "x_center": 1, "y_center": 1, "width": 2,
                                "height": 2})),
                       r"pass --allow-uris with the prefixes the job may read")


def test_case_5_uris_outside_the_allow_list_or_not_regular_files_become_rows(ray_cluster,
                                                                           tmp_path):
    allowed = tmp_path / "images"
    allowed.mkdir()
    (allowed / "good.png").write_bytes(png(image_pixels(0)))
    os.mkfifo(allowed / "fifo.png")
    (allowed / "folder.png").mkdir()
    (allowed / "big.png").write_bytes(png(image_pixels(1)) + b"\0" * 5000)
    (tmp_path / "secret.txt").write_text("root:x:0:0:secret")
    cases = {
        "good": str(allowed / "good.png"),
        "relative": "good.png",  # resolves against the images file's folder
        "passwd": "/etc/passwd",
        "file-url": "file:///etc/passwd",
        "climb": "../secret.txt",
        "climb-abs": f"{allowed}/../secret.txt",
        "loopback-http": "http://127.0.0.1:9/latest/meta-data/",
        "other-bucket": "s3://other-bucket/a.png",
        "fifo": str(allowed / "fifo.png"),
        "dev-zero": "/dev/zero",
        "folder": str(allowed / "folder.png"),
        "too-big": str(allowed / "big.png"),
    }
    write_parquet(pa.table({"image_id": list(cases), "uri": list(cases.values())}),
                  allowed / "images.parquet")
    output = Output.local(tmp_path / "out")
    summary = run(JobConfig(images=str(allowed / "images.parquet"), output=output.root,
                            step=STATIC, allow_uris=(str(allowed), "/dev/"),
                            max_image_bytes=len(png(image_pixels(1))) + 100))
    found = outcomes(output, "image_id")
    assert found == Counter({("good", corpus.CROP): 1, ("relative", corpus.CROP): 1} | {
        (name, "fetch_failed"): 1 for name in cases if name not in ("good", "relative")})
    assert summary.crops == 2
    messages = " ".join(output.table("errors")["message"].to_pylist())
    assert "root:x" not in messages and "secret" not in messages.replace("secret.txt", "")


def write_table_with(writer: str, table: pa.Table, path: Path) -> None:
    """``table`` written as a real writer writes it (their own types: large_string, views...)."""
    if writer == "pandas":
        table.to_pandas().to_parquet(path)  # pandas 3: strings are large_string
    elif writer == "polars":
        polars = pytest.importorskip("polars")
        polars.from_arrow(table).write_parquet(path)
    elif writer == "duckdb":
        duckdb = pytest.importorskip("duckdb")
        relation = duckdb.from_arrow(table)  # noqa: F841 - named in the SQL below
        duckdb.sql(f"COPY (SELECT * FROM relation) TO '{path}' (FORMAT parquet)")
    elif writer == "datasets":
        import datasets

        datasets.Dataset(table).to_parquet(str(path))
    elif writer == "large-types":
        large = pa.schema([f.with_type(pa.large_string() if pa.types.is_string(f.type) else
                                       pa.large_binary() if pa.types.is_binary(f.type)
                                       else f.type) for f in table.schema])
        pq.write_table(table.cast(large), path)
    else:
        raise AssertionError(writer)


@pytest.mark.parametrize("writer", ["pandas", "polars", "duckdb", "datasets", "large-types"])
def test_case_6_tables_written_by_real_writers(ray_cluster, tmp_path, writer):
    images, detections = images_table(3), detections_table(3, 2, masks=False)
    write_table_with(writer, images, tmp_path / "images.parquet")
    (tmp_path / "detections").mkdir()
    write_table_with(writer, detections, tmp_path / "detections" / "d.parquet")
    arguments = ["--images", str(tmp_path / "images.parquet"), "--detections",
                 str(tmp_path / "detections"), "--step", DYNAMIC_JSON]
    checked = cli("validate", *arguments)
    assert checked.returncode == 0, checked.stderr
    summary = run(JobConfig(images=str(tmp_path / "images.parquet"),
                            detections=str(tmp_path / "detections"),
                            output=str(tmp_path / "out"), step=DYNAMIC))
    assert (summary.crops, summary.error_count) == (6, 0)


def test_case_7_a_mask_with_a_null_size_is_its_row(ray_cluster, tmp_path):
    images = images_table(1)
    detections = detections_table(1, 3)
    masks = detections["mask"].to_pylist()
    masks[0] = {"size": None, "counts": masks[0]["counts"]}
    masks[1] = {"size": [48, 64], "counts": None}
    detections = detections.set_column(detections.schema.get_field_index("mask"), "mask",
                                       pa.array(masks, detections.schema.field("mask").type))
    write_parquet(images, tmp_path / "images.parquet")
    write_parquet(detections, tmp_path / "detections.parquet")
    output = Output.local(tmp_path / "out")
    run(JobConfig(images=str(tmp_path / "images.parquet"),
                  detections=str(tmp_path / "detections.parquet"), output=output.root,
                  step=steps.parse_step({"type": DYNAMIC.type, "mask_opacity": 1.0})))
    reasons = sorted(output.table("errors")["reason"].to_pylist())
    assert reasons == ["invalid_mask", "invalid_mask"]
    assert output.table("crops").num_rows == 1


@pytest.mark.parametrize(
    "column, value_type, match",
    [
        # a keypoint coordinate as text
        ("keypoints", pa.list_(pa.struct([("x", pa.string()), ("y", pa.float64())])),
         r"'keypoints' must be list<struct<x: float64"),
        # polygon points as text
        ("polygon", pa.list_(pa.list_(pa.string())), r"'polygon' must be list<list<float64>>"),
        # RLE counts as a float
        ("mask", pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.float64())]),
         r"'mask' must be struct<size"),
    ],
)
def test_case_8_mistyped_nested_fields_fail_before_any_work(tmp_path, column, value_type, match):
    detections = detections_table(1, 1, masks=False).drop_columns(
        [c for c in ("keypoints", "polygon", "mask") if c in detections_table(1, 1).schema.names])
    detections = detections.append_column(column, pa.nulls(1, value_type))
    write_parquet(images_table(1), tmp_path / "images.parquet")
    write_parquet(detections, tmp_path / "detections.parquet")
    for command in ("validate", "run"):
        one_line_error(cli(command, "--images", str(tmp_path / "images.parquet"),
                           "--detections", str(tmp_path / "detections.parquet"),
                           "--output", str(tmp_path / "out"), "--step", DYNAMIC_JSON), match)


def test_case_10_a_passing_http_outage_is_retried_not_a_row(ray_cluster, tmp_path):
    import http.server

    failures = {"/busy.png": 2}
    body = png(image_pixels(0))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the standard library's name
            if failures.get(self.path, 0) > 0:
                failures[self.path] -= 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200 if self.path == "/busy.png" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        write_parquet(pa.table({"image_id": ["busy", "gone"],
                                "uri": [f"{base}/busy.png", f"{base}/gone.png"]}),
                      tmp_path / "images.parquet")
        output = Output.local(tmp_path / "out")
        run(JobConfig(images=str(tmp_path / "images.parquet"), output=output.root, step=STATIC,
                      allow_uris=(base + "/",)))
    finally:
        server.shutdown()
        server.server_close()
    assert failures["/busy.png"] == 0  # the outage happened
    assert outcomes(output, "image_id") == Counter({("busy", corpus.CROP): 1,
                                                    ("gone", "fetch_failed"): 1})


def test_case_11_the_one_line_names_a_failed_tasks_root_cause(ray_cluster):
    import ray.data

    from jobs.cli import describe_failure

    def broken(batch):
        raise TypeError("unsupported operand type(s) for +: 'NoneType' and 'int'")

    with pytest.raises(Exception) as failure:  # noqa: B017 - whatever Ray wraps it in
        ray.data.range(2).map_batches(broken).materialize()
    assert describe_failure(failure.value) == (
        "TypeError: unsupported operand type(s) for +: 'NoneType' and 'int'")


def test_case_12_validate_and_run_check_a_read_only_output_before_work(tmp_path):
    images, detections = small_inputs(tmp_path / "in")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output folder should be")
    for command in ("validate", "run"):
        result = cli(command, *run_args(images, detections, str(blocked / "out"))[1:])
        one_line_error(result, r"cannot write")
    ok = cli("validate", *run_args(images, detections, str(tmp_path / "fresh"))[1:])
    assert ok.returncode == 0 and "can be claimed" in ok.stdout, ok.stderr
    assert not (tmp_path / "fresh").exists() or not any((tmp_path / "fresh").rglob("*.json"))


def test_case_13_crop_ids_do_not_collide_and_temporary_files_are_cleaned(ray_cluster, tmp_path):
    data = png(image_pixels(0))
    write_parquet(pa.table({"image_id": ["a\nb", "a"], "image": [data, data]}),
                  tmp_path / "images.parquet")
    box = {"x_min": 2.0, "y_min": 2.0, "x_max": 20.0, "y_max": 20.0}
    write_parquet(pa.table({"image_id": ["a\nb", "a"], "detection_id": ["c", "b\nc"],
                            **{k: [v, v] for k, v in box.items()}}), tmp_path / "d.parquet")
    output = Output.local(tmp_path / "out")
    config = JobConfig(images=str(tmp_path / "images.parquet"),
                       detections=str(tmp_path / "d.parquet"), output=output.root, step=DYNAMIC)
    run(config)
    ids = output.table("crops")["crop_id"].to_pylist()
    assert len(ids) == 2 and len(set(ids)) == 2
    # a crash before the commit, with temporary files of failed attempts left behind
    manifest = output.manifest()
    shard = manifest["shards"][0]["shard"]
    run_tag = manifest["fingerprint"][:16]  # temporary files carry their run's tag
    leftovers = [f"crops/part-{shard}.parquet.tmp-{run_tag}{uuid.uuid4().hex}",
                 f"_shards/{shard}.json.tmp-{run_tag}{uuid.uuid4().hex}"]
    for name in leftovers:
        (tmp_path / "out" / name).write_bytes(b"partial")
    (tmp_path / "out" / "_manifest.json").unlink()
    run(config)
    assert not any((tmp_path / "out" / name).exists() for name in leftovers)
    assert_complete(output)
