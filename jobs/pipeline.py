"""The crop job: plan on the driver, crop on Ray Data, commit the manifest last.

    plan (driver)   list images files and row groups, read image ids, check every column,
                    pair detections with images, reject what cannot pair (error rows)
    crop (Ray Data) one task per row group: read rows -> decode each image once -> crop all
                    its boxes -> encode each crop once -> write crops, lineage, errors shards
    commit (driver) gather shard markers, delete uncommitted leftovers, write _manifest.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime

import pyarrow as pa

from cropcore.codec import DEFAULT_MAX_PIXELS
from jobs import ownership, raycompat, steps
from jobs.fetch import DEFAULT_MAX_IMAGE_BYTES, parse_allow_list
from jobs.plan import Plan, make_plan
from jobs.progress import Progress, planned_shards
from jobs.sinks import commit_manifest, committed_shards, read_marker, write_shard
from jobs.storage import Location, StorageError, resolve
from jobs.udfs import JobContext, crop_units, now
from jobs.versions import code_version

__all__ = ["JobConfig", "JobError", "Prepared", "Summary", "build_pipeline", "check_output",
           "claim", "prepare", "run"]

log = logging.getLogger("jobs")
FORMATS = ("png", "jpeg", "webp", "npy")
# Retries of a unit whose task failed on storage, after the S3 client's own retries gave up.
TASK_RETRIES = 3


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
        if self.reduced_decode and not self.step.fixed_shape:
            raise JobError("--reduced-decode applies to the crop_and_resize step only")
        if self.quality is not None and fmt in ("png", "npy"):
            raise JobError(f"--quality applies to jpeg and webp, not {fmt}")
        try:
            object.__setattr__(self, "allow_uris", parse_allow_list(self.allow_uris))
        except ValueError as error:
            raise JobError(str(error)) from None
        for name in ("max_pixels", "max_detections", "rows_per_shard", "max_image_bytes"):
            if getattr(self, name) < 1:
                raise JobError(f"{name} must be a positive integer, got {getattr(self, name)}")


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
        "quality": config.quality, "inputs": plan.input_digest,
        "keep_columns": list(plan.layout.carried) if plan.layout else [],
        "max_pixels": config.max_pixels, "max_detections": config.max_detections,
        "rows_per_shard": config.rows_per_shard, "reduced_decode": config.reduced_decode,
        "allow_uris": list(config.allow_uris), "max_image_bytes": config.max_image_bytes,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    run_id = config.run_id or f"run-{digest[:12]}"
    fingerprint = hashlib.sha256(f"{digest}\n{run_id}".encode()).hexdigest()
    context = JobContext(
        step=config.step, step_json=step_json, layout=plan.layout, output_url=config.output,
        image_format=config.image_format, quality=config.quality, max_pixels=config.max_pixels,
        max_detections=config.max_detections, rows_per_shard=config.rows_per_shard,
        reduced_decode=config.reduced_decode,
        run_id=run_id, fingerprint=fingerprint, code_version=version, created_at=now(),
        parameter_columns=references, allow_uris=config.allow_uris,
        max_image_bytes=config.max_image_bytes,
    )
    return Prepared(config, plan, context, run_id, fingerprint, settings, output)


def check_output(prepared: Prepared) -> ownership.OutputState:
    """Every check of the output that needs no claim: who owns it, what else it holds, and
    whether it can be written (a probe object is written and deleted). ``validate`` runs these;
    ``claim`` runs them too, before starting any work."""
    if prepared.output is None:
        raise JobError("--output is required to run")
    state = ownership.inspect_output(prepared.output)
    try:
        ownership.check_output(prepared.output, state, run_id=prepared.run_id,
                               fingerprint=prepared.fingerprint, settings=prepared.settings,
                               allow_foreign=prepared.config.allow_foreign_files,
                               describe=describe_difference)
    except ownership.OutputRefused as error:
        raise JobError(str(error)) from None
    if state.manifest is None:
        ownership.check_writable(prepared.output)
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


def build_pipeline(prepared: Prepared):
    """The Ray Data dataset of the crop stage: one row per planned unit in, one marker row per
    committed shard out. Lazy: nothing runs until it is consumed."""
    import ray

    plan = prepared.plan
    detections_ref = ray.put(plan.detections) if plan.detections is not None else None
    context = JobContext(**{**asdict_shallow(prepared.context), "detections": detections_ref})
    units = [asdict(u) | {"skip_rows": list(u.skip_rows)} for u in plan.units]
    dataset = ray.data.from_items(units, override_num_blocks=max(1, len(units)))
    # A retried unit skips its committed shards and rewrites the others under the same names.
    return raycompat.map_batches(dataset, crop_units, fn_kwargs={"context": context},
                                 batch_size=1, num_cpus=1, retry_errors=(StorageError,),
                                 max_task_retries=TASK_RETRIES)


def asdict_shallow(obj) -> dict:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def run(job: JobConfig | Prepared) -> Summary:
    """Run the job to a committed manifest (see ``jobs.sinks`` for the commit protocol). A
    ``Prepared`` job is used as it is (planned once); a claimed one is not claimed again."""
    started = time.perf_counter()
    prepared = job if isinstance(job, Prepared) else prepare(job)
    config, output = prepared.config, prepared.output
    existing = ownership.inspect_output(output).manifest
    if existing is not None and existing.get("fingerprint") == prepared.fingerprint:
        log.info("output already holds this run, committed; nothing to do")
        return Summary(**existing["counts"] | {"output": output.url, "shards_skipped":
                                               len(existing["shards"]), "shards": 0})
    prepared = claim(prepared)
    plan = prepared.plan
    log.info("plan: %d images in %d row groups, %d detections, %d rows rejected before work",
             plan.num_images, len(plan.units), plan.num_detections, plan.errors.num_rows)
    summary = Summary(run_id=prepared.run_id, output=output.url)
    resumed = committed_shards(output)  # names hash the fingerprint: only this run's count
    markers = []
    if prepared.plan.errors.num_rows:
        counts = {"errors": _reason_counts(prepared.plan.errors)}
        name = hashlib.sha256(f"{prepared.fingerprint}\nplan".encode()).hexdigest()[:24]
        marker = read_marker(output, name) if name in resumed else None
        markers.append(marker or write_shard(output, name, {"errors": prepared.plan.errors},
                                             counts))
    if prepared.plan.units:
        dataset = build_pipeline(prepared)
        # A progress line at a steady interval when stderr is not a terminal (ray job logs).
        with Progress(planned_shards(prepared.plan.units, config.rows_per_shard)) as progress:
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                new = [json.loads(m) for m in batch.column("marker").to_pylist()]
                markers += new
                progress.update(new)
        log.info("crop: %d shards written or found committed", len(markers))
    summary.detections = prepared.plan.num_detections
    for marker in markers:
        counts = marker["counts"]
        summary.images += counts.get("images", 0)
        summary.images_decoded += counts.get("images_decoded", 0)
        summary.images_without_detections += counts.get("images_without_detections", 0)
        summary.crops += counts.get("crops", 0)
        summary.unmasked += counts.get("unmasked", 0)
        if prepared.plan.nested_detections:
            summary.detections += counts.get("detections", 0)
        for reason, n in counts.get("errors", {}).items():
            summary.errors[reason] = summary.errors.get(reason, 0) + n
    summary.shards = len(markers)
    summary.shards_skipped = sum(marker["shard"] in resumed for marker in markers)
    summary.seconds = round(time.perf_counter() - started, 3)
    manifest = {
        "run_id": prepared.run_id,
        "status": "committed",
        "fingerprint": prepared.fingerprint,
        "step": json.loads(prepared.context.step_json),
        "code_version": prepared.context.code_version,
        "format": config.image_format,
        "inputs": {"images": resolve(config.images).url,
                   "detections": resolve(config.detections).url if config.detections else None},
        "counts": {k: v for k, v in asdict(summary).items() if k not in ("output", "seconds")},
        "settings": prepared.settings,
        "shards": sorted(markers, key=lambda m: m["shard"]),
    }
    removed = ownership.remove_own_leftovers(output, {m["shard"] for m in markers})
    if removed:
        log.info("commit: removed %d temporary files of failed attempts", removed)
    commit_manifest(output, manifest)
    log.info("commit: %s written", output.child("_manifest.json").url)
    return summary


def _reason_counts(errors: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for reason in errors.column("reason").to_pylist():
        counts[reason] = counts.get(reason, 0) + 1
    return counts
