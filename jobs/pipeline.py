"""The crop job: plan and claim on the driver, pair and crop on Ray Data, commit last.

    plan (driver)    list images and detections files and their row groups (footers only),
                     check every column and the step; claim the output (jobs.ownership)
    pair (Ray Data)  shuffle image ids and detection rows by key: repeated ids and orphans
                     become error shards, each unit's detections are staged (jobs.pairing)
    crop (Ray Data)  one task per images row group: read rows -> decode each image once ->
                     crop all its boxes -> encode each crop once -> write crops, lineage and
                     errors shards, then the shard's marker
    commit (driver)  stream the markers into Parquet index files, delete this run's
                     temporary and work files, write _manifest.json (jobs.sinks)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime

import pyarrow as pa

from cropcore.codec import DEFAULT_MAX_PIXELS
from jobs import ownership, pairing, raycompat, schema, steps
from jobs.fetch import DEFAULT_MAX_IMAGE_BYTES, dot_segments, parse_allow_list
from jobs.plan import Plan, make_plan
from jobs.progress import Progress, interval_from_environment, planned_shards
from jobs.sinks import (
    INDEX_ROWS_PER_PART,
    commit_run,
    read_manifest,
    sum_parts,
    write_index_part,
)
from jobs.storage import Location, StorageError, delete, redact, resolve, write_atomic
from jobs.udfs import JobContext, crop_units, now
from jobs.versions import code_version

__all__ = ["JobConfig", "JobError", "Prepared", "Summary", "build_pipeline", "check_output",
           "claim", "crop_in_process", "prepare", "run", "work_area"]

log = logging.getLogger("jobs")
FORMATS = tuple(schema.CROP_FORMATS)
# Retries of a unit whose task failed on storage, after the S3 client's own retries gave up.
TASK_RETRIES = 3
BLOCKS_PER_CPU = 8  # crop-stage input blocks per cluster CPU (at most one unit each)


class JobError(RuntimeError):
    """The job cannot run as configured (one clear line, shown without a traceback)."""


@dataclass(frozen=True)
class JobConfig:
    """A crop job. ``step`` is a parsed step; URLs are any fsspec/pyarrow URL or local path."""

    images: str
    output: str
    step: steps.Step
    detections: str | None = None
    image_format: str | None = None  # default: npy for crop_and_resize, png otherwise
    quality: int | None = None
    webp_method: int | None = None  # webp only: libwebp's effort 0..6 (None: OpenCV's encoder)
    run_id: str | None = None
    keep_columns: tuple[str, ...] | None = None  # None: small scalar columns
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_detections: int = 10_000
    rows_per_shard: int = 32
    reduced_decode: bool = False  # crop_and_resize: DCT-scaled JPEG decode if boxes shrink 2x+
    allow_uris: tuple[str, ...] = ()  # prefixes a `uri`/`path` value may name (jobs.fetch)
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES  # cap on a fetched image object
    allow_foreign_files: bool = False  # write beside files the job did not write (never deleted)

    def __post_init__(self):
        fmt = self.image_format or self.step.default_format  # steps.STEPS: per step type
        object.__setattr__(self, "image_format", fmt)
        if fmt not in FORMATS:
            raise JobError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if fmt == "npy" and not self.step.fixed_shape:
            raise JobError("--format npy needs the crop_and_resize step (fixed-shape crops)")
        if self.quality is not None and not (1 <= self.quality <= 100):
            raise JobError(f"--quality must be within 1..100, got {self.quality}")
        if self.webp_method is not None and (type(self.webp_method) is not int
                                             or not 0 <= self.webp_method <= 6):
            raise JobError(f"--webp-method must be an integer within 0..6, got {self.webp_method}")
        if self.reduced_decode and not self.step.fixed_shape:
            raise JobError("--reduced-decode applies to the crop_and_resize step only")
        if self.quality is not None and fmt in ("png", "npy"):
            raise JobError(f"--quality applies to jpeg and webp, not {fmt}")
        if self.webp_method is not None and fmt != "webp":
            raise JobError(f"--webp-method applies to webp only, not {fmt}")
        try:
            object.__setattr__(self, "allow_uris", parse_allow_list(self.allow_uris))
        except ValueError as error:
            raise JobError(str(error)) from None
        for name in ("max_pixels", "max_detections", "rows_per_shard", "max_image_bytes"):
            if getattr(self, name) < 1:
                raise JobError(f"{name} must be a positive integer, got {getattr(self, name)}")
        crop_size = getattr(self.step, "crop_size", None)
        if crop_size is not None and crop_size[0] * crop_size[1] > self.max_pixels:
            # every crop is made in memory: the operator's pixel budget holds for crops too
            raise JobError(f"crop_size {crop_size[0]}x{crop_size[1]} is "
                           f"{crop_size[0] * crop_size[1]:,} pixels per crop, over --max-pixels "
                           f"({self.max_pixels:,})")


@dataclass
class Summary:
    """What a run did; also the manifest's ``counts``."""

    run_id: str
    output: str
    images: int = 0
    detections: int = 0
    crops: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    images_decoded: int = 0
    images_without_detections: int = 0
    unmasked: int = 0  # background removal asked, but a crop had neither mask nor polygon
    shards: int = 0
    shards_skipped: int = 0
    seconds: float = 0.0
    status: str = "committed"

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class Prepared:
    """A checked job: its plan, the context workers get, and the run's identity."""

    config: JobConfig
    plan: Plan
    context: JobContext
    run_id: str
    fingerprint: str
    settings: dict
    output: Location | None  # None: validating without an --output


def prepare(config: JobConfig) -> Prepared:
    """Check the step, every input column and the output's place before any work starts."""
    for name, url in (("--images", config.images), ("--detections", config.detections),
                      ("--output", config.output)):
        _refuse_path_in_job_copy(name, url)
        _refuse_dot_segments(name, url)
    try:
        interval_from_environment()
    except ValueError as error:
        raise JobError(str(error)) from None
    output = resolve(config.output) if config.output else None
    for name, url in (("--images", config.images), ("--detections", config.detections)):
        if url and output and ownership.overlapping(resolve(url), output):
            raise JobError(f"{name} {resolve(url).url} and --output {output.url} overlap; the "
                           f"output must be a folder apart from every input")
    references = steps.column_refs(config.step)
    plan = make_plan(config.images, config.detections,
                     needs_detections=config.step.needs_detections,
                     keep_columns=config.keep_columns, parameter_columns=references)
    if plan.layout is not None and plan.layout.image_source == "uri" and not config.allow_uris:
        raise JobError("the images table names its images in a 'uri' column: pass --allow-uris "
                       "with the prefixes the job may read, for example "
                       "--allow-uris s3://bucket/images/,file:///data/images/")
    version = code_version()
    step_json = steps.step_to_json(config.step)
    settings = {
        "code_version": version, "step": step_json, "format": config.image_format,
        "quality": config.quality, "webp_method": config.webp_method,
        "inputs": plan.input_digest,
        "keep_columns": list(plan.layout.carried) if plan.layout else [],
        "max_pixels": config.max_pixels, "max_detections": config.max_detections,
        "rows_per_shard": config.rows_per_shard, "reduced_decode": config.reduced_decode,
        "allow_uris": list(config.allow_uris), "max_image_bytes": config.max_image_bytes,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    run_id = config.run_id or f"run-{digest[:12]}"
    fingerprint = hashlib.sha256(f"{digest}\n{run_id}".encode()).hexdigest()
    context = JobContext(
        step=config.step, step_json=step_json, layout=plan.layout,
        output_url=output.url if output else config.output,
        image_format=config.image_format, quality=config.quality, max_pixels=config.max_pixels,
        max_detections=config.max_detections, rows_per_shard=config.rows_per_shard,
        reduced_decode=config.reduced_decode,
        run_id=run_id, fingerprint=fingerprint, code_version=version, created_at=now(),
        parameter_columns=references, allow_uris=config.allow_uris,
        max_image_bytes=config.max_image_bytes, webp_method=config.webp_method,
    )
    return Prepared(config, plan, context, run_id, fingerprint, settings, output)


def _refuse_path_in_job_copy(name: str, url: str | None) -> None:
    """Under ``ray job submit --working-dir``, the driver runs in a temporary copy of that
    folder, which Ray deletes after the job: a relative path would name a folder in it."""
    if not url or os.path.isabs(url) or "://" in url:
        return
    here = os.getcwd().replace(os.sep, "/")
    if "/runtime_resources/working_dir_files/" in here:
        raise JobError(f"{name} {url} is a relative path, and this job runs in Ray's temporary "
                       f"copy of --working-dir ({here}), which Ray deletes after the job: give "
                       f"an absolute path every node sees, or an s3:// or gs:// URL")


def _refuse_dot_segments(name: str, url: str | None) -> None:
    """An object store's keys are plain names: ``s3://b/x/../y`` is the key ``x/../y``, not
    ``y``, so overlap checks that resolve ``..`` would compare another place than the one
    written. Local paths resolve ``..`` as usual."""
    if not url or "://" not in url or url.lower().startswith(("file://", "local://")):
        return
    if dot_segments(url.split("://", 1)[1]):
        raise JobError(f"{name} {redact(url)} has a '.' or '..' segment, which an object "
                       f"store takes as part of a key name: give the path without them")


def check_cluster_sees(prepared: Prepared) -> None:
    """On a cluster of several nodes, the local paths the driver uses must be the same files on
    every node that runs tasks: the output folder (a probe file written here, then deleted) and
    the first images and detections files. A folder local to each machine would split the
    output between them, with the manifest on the driver's machine only."""
    plan, output = prepared.plan, prepared.output
    paths = {}
    for name, url in (("--images", plan.units[0].file_url if plan.units else None),
                      ("--detections", plan.detection_parts[0].file_url
                       if plan.detection_parts else None)):
        if url and (location := resolve(url)).is_local:
            paths[location.path] = name
    probe = output.child(f"_probe-{uuid.uuid4().hex}") if output.is_local else None
    if probe is not None:
        write_atomic(probe, b"")
        paths[probe.path] = "--output"
    try:
        missing = raycompat.nodes_missing(list(paths))
    except ConnectionError as error:
        raise JobError(f"{error} (nothing was claimed)") from None
    finally:
        if probe is not None:
            delete(probe)
    if missing:
        node, path = missing[0]
        raise JobError(f"{paths[path]} {path if paths[path] != '--output' else output.url} is "
                       f"on a local filesystem that node {node} does not see: on a cluster of "
                       f"several machines, use s3:// or gs:// URLs, or a folder that every node "
                       f"mounts at the same path")


def check_output(prepared: Prepared, leave_no_folder: bool = False) -> ownership.OutputState:
    """Every check of the output that needs no claim: who owns it, what else it holds, and
    whether it can be written (a probe object is written and deleted). ``validate`` runs these;
    ``claim`` runs them too, before starting any work."""
    if prepared.output is None:
        raise JobError("--output is required to run")
    try:
        state = ownership.inspect_output(prepared.output)
        ownership.check_output(prepared.output, state, run_id=prepared.run_id,
                               fingerprint=prepared.fingerprint, settings=prepared.settings,
                               allow_foreign=prepared.config.allow_foreign_files,
                               describe=describe_difference)
    except ownership.OutputRefused as error:
        raise JobError(str(error)) from None
    if state.manifest is None:
        ownership.check_writable(prepared.output, leave_no_folder)
    return state


def claim(prepared: Prepared) -> Prepared:
    """Check the output and claim it for this run (before any work; see ``jobs.ownership``).
    The returned job carries the claim's time, shared by every attempt of the run."""
    state = check_output(prepared)
    if state.manifest is not None:
        return prepared  # committed by this very run: nothing will be written
    try:
        owner = ownership.claim_output(prepared.output, run_id=prepared.run_id,
                                       fingerprint=prepared.fingerprint,
                                       settings=prepared.settings)
    except ownership.OutputRefused as error:
        raise JobError(str(error)) from None
    created_at = datetime.fromisoformat(owner.created_at)
    return dataclasses.replace(prepared,
                               context=dataclasses.replace(prepared.context, created_at=created_at))


def describe_difference(old: dict, new: dict) -> str:
    """Which of inputs, step, settings or code version differ between two runs' settings."""
    parts = []
    if old.get("inputs") != new.get("inputs"):
        parts.append("inputs")
    if old.get("step") != new.get("step"):
        parts.append("step")
    if old.get("code_version") != new.get("code_version"):
        parts.append(f"code version ({old.get('code_version')} there, "
                     f"{new.get('code_version')} here)")
    other = sorted(k for k in set(old) | set(new)
                   if k not in ("inputs", "step", "code_version") and old.get(k) != new.get(k))
    if other:
        parts.append("settings (" + ", ".join(other) + ")")
    return " and ".join(parts)


def build_pipeline(prepared: Prepared, staged_units: frozenset[int] = frozenset()):
    """The Ray Data dataset of the crop stage: one row per planned unit in, one marker row per
    committed shard out. Lazy: nothing runs until it is consumed."""
    import ray

    units = _unit_rows(prepared.plan, staged_units)
    # Blocks, not units, cost the driver (about 2.4 KB and 1.6 ms each, measured): a few per
    # CPU keep every CPU busy and retries small, whatever the number of row groups.
    num_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    blocks = max(1, min(len(units), BLOCKS_PER_CPU * num_cpus))
    dataset = ray.data.from_items(units, override_num_blocks=blocks)
    # A retried unit skips its committed shards and rewrites the others under the same names.
    return raycompat.map_batches(dataset, crop_units, fn_kwargs={"context": prepared.context},
                                 batch_size=1, num_cpus=1, retry_errors=(StorageError,),
                                 max_task_retries=TASK_RETRIES)


def _unit_rows(plan: Plan, staged_units: frozenset[int]) -> list[dict]:
    """The crop stage's input rows: each unit, marked when pairing staged rows for it."""
    return [asdict(dataclasses.replace(u, staged=u.index in staged_units)) for u in plan.units]


def work_area(prepared: Prepared) -> Location:
    """Where pairing stages each unit's detections for this run (deleted at the commit)."""
    return prepared.output.child("_work", prepared.fingerprint[:16])


def run(job: JobConfig | Prepared) -> Summary:
    """Run the job to a committed manifest (see ``jobs.sinks`` for the commit protocol). A
    ``Prepared`` job is used as it is (planned once); a claimed one is not claimed again.

    The driver holds the plan (units: one per images row group) and streams the crop stage's
    shard markers into index files of ``INDEX_ROWS_PER_PART`` shards; nothing it keeps grows
    with the number of images, detections or shards."""
    import ray

    started = time.perf_counter()
    prepared = job if isinstance(job, Prepared) else prepare(job)
    config, output = prepared.config, prepared.output
    existing = read_manifest(output)
    if existing is not None and existing.get("fingerprint") == prepared.fingerprint:
        log.info("output already holds this run, committed; nothing to do")
        # (but what a slower start of the same run left after the commit)
        ownership.remove_own_leftovers(output, prepared.fingerprint, len(prepared.plan.units),
                                       work_only=True)
        return Summary(**existing["counts"] | {"output": output.url, "shards": 0,
                                               "shards_skipped": existing["counts"]["shards"]})
    check_cluster_sees(prepared)
    prepared = claim(prepared)
    plan = prepared.plan
    log.info("plan: %d images in %d row groups, %d detections in %d row groups",
             plan.num_images, len(plan.units), plan.num_detections, len(plan.detection_parts))
    work = work_area(prepared)
    prepared = dataclasses.replace(prepared, context=dataclasses.replace(
        prepared.context, work_url=work.url))
    num_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    paired = pairing.pair(plan, output, work, prepared.fingerprint, num_cpus)
    log.info("pair: %d units with detections or skipped rows, %d error shards",
             len(paired.staged_units), len(paired.markers))
    parts = [write_index_part(output, prepared.fingerprint, list(paired.markers))] \
        if paired.markers else []
    if plan.units:
        dataset = build_pipeline(prepared, paired.staged_units)
        buffered: list[dict] = []
        # A progress line at a steady interval when stderr is not a terminal (ray job logs).
        with Progress(planned_shards(plan.units, config.rows_per_shard)) as progress:
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                new = [json.loads(m) for m in batch.column("marker").to_pylist()]
                progress.update(new)
                buffered += new
                if len(buffered) >= INDEX_ROWS_PER_PART:
                    parts.append(write_index_part(output, prepared.fingerprint, buffered))
                    buffered = []
        if buffered:
            parts.append(write_index_part(output, prepared.fingerprint, buffered))
    existing = read_manifest(output)
    if existing is not None and existing.get("fingerprint") == prepared.fingerprint:
        # the same run, started twice, committed first: its commit stands; this start's work
        # files (pairing ran again) go, as the commit would have removed them
        log.info("commit: this run was committed meanwhile by another start of it")
        ownership.remove_own_leftovers(output, prepared.fingerprint, len(plan.units),
                                       work_only=True)
        return Summary(**existing["counts"], output=output.url,
                       seconds=round(time.perf_counter() - started, 3))
    removed = ownership.remove_own_leftovers(output, prepared.fingerprint, len(plan.units))
    if removed:
        log.info("commit: removed %d temporary and work files of this run", removed)
    counts, shards = sum_parts(parts)
    manifest = commit_run(output, prepared.fingerprint, _manifest_header(prepared) | {
        "counts": _summary_counts(prepared, counts, shards)}, parts)
    log.info("commit: %s written", output.child("_manifest.json").url)
    return Summary(**manifest["counts"], output=output.url,
                   seconds=round(time.perf_counter() - started, 3))


def crop_in_process(prepared: Prepared) -> list[dict]:
    """Pair and crop every unit in this process, without Ray, and return the shard markers
    (nothing is committed): the job's own functions, for tests and the crop UDF's benchmark."""
    work = work_area(prepared)
    context = dataclasses.replace(prepared.context, work_url=work.url)
    paired = pairing.pair_in_process(prepared.plan, prepared.output, work, prepared.fingerprint)
    markers = list(paired.markers)
    for row in _unit_rows(prepared.plan, paired.staged_units):
        batch = crop_units(pa.Table.from_pylist([row]), context)
        markers += [json.loads(m) for m in batch.column("marker").to_pylist()]
    return markers


def _manifest_header(prepared: Prepared) -> dict:
    config = prepared.config
    return {
        "run_id": prepared.run_id,
        "status": "committed",
        "fingerprint": prepared.fingerprint,
        "step": json.loads(prepared.context.step_json),
        "code_version": prepared.context.code_version,
        "format": config.image_format,
        "inputs": {"images": resolve(config.images).url,
                   "detections": resolve(config.detections).url if config.detections else None},
        "settings": prepared.settings,
    }


def _summary_counts(prepared: Prepared, counts: dict, shards: dict) -> dict:
    """The manifest's ``counts``: the summary's fields, from the shards' summed counts."""
    plan = prepared.plan
    summary = Summary(run_id=prepared.run_id, output="", **shards)
    for name in ("images", "images_decoded", "images_without_detections", "crops", "unmasked"):
        setattr(summary, name, counts.get(name, 0))
    # a detections table is counted from its footers; nested detections by the crop tasks
    summary.detections = counts.get("detections", 0) if plan.nested_detections \
        else plan.num_detections
    summary.errors = dict(sorted(counts.get("errors", {}).items()))
    return {k: v for k, v in asdict(summary).items() if k not in ("output", "seconds")}
