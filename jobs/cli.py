"""The command line: ``cropjob`` / ``python -m jobs``. A thin layer over ``jobs.pipeline``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import re
import shutil
import sys
from pathlib import Path

from jobs import schema, steps, storage

__all__ = ["main"]

RUN_EXAMPLE = """example:
  python -m jobs run --images s3://bucket/images/ --detections s3://bucket/detections/ \\
      --output s3://bucket/crops-v1/ \\
      --step '{"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 1.0}'
credentials and endpoints come from the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL...)."""


PLUGGED_COMMANDS = (
    ("import", "jobs.importers", "turn COCO, YOLO or Roboflow annotations into the job's tables"),
    ("report", "jobs.report", "write a contact sheet and an HTML report of a run's output"),
    ("export", "jobs.exports", "export a run's crops as WebDataset shards or OpenLineage events"),
    # The benchmark is a tool, not part of the package: the command exists when ``benchmarks``
    # is importable, i.e. when run from a checkout (``python -m jobs bench`` in its root).
    ("bench", "benchmarks.bench", "measure the job and the kernels against their peers "
                                  "(from a checkout)"),
)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is not there
        return False


def _step_argument(text: str) -> steps.Step:
    if text.startswith("@"):
        location = storage.resolve(text[1:])
        text = storage.read_bytes(location).decode("utf-8")
    return steps.parse_step(text)


class HelpFormatter(argparse.RawTextHelpFormatter):
    """Raw-text help that also shows each option's default, when it has a meaningful one."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" not in text and action.option_strings and default is not None
                and default is not False and default is not argparse.SUPPRESS and default != ""):
            text += " (default: %(default)s)"
        return text


def _job_arguments(parser: argparse.ArgumentParser, *, output_required: bool = True) -> None:
    parser.add_argument("--images", required=True, help="images Parquet: file, directory or glob")
    parser.add_argument("--detections", help="detections Parquet (not needed for static crops or "
                        "when detections are nested on the images)")
    parser.add_argument("--output", required=output_required, help="output directory URL")
    parser.add_argument("--step", required=True,
                        help="the step JSON, or @path/to/step.json")
    parser.add_argument("--format", choices=tuple(schema.CROP_FORMATS),
                        help="crop encoding (default png; npy for crop_and_resize)")
    parser.add_argument("--quality", type=int,
                        help="jpeg/webp quality 1..100 (default: 95 for jpeg, 90 for webp)")
    parser.add_argument("--webp-method", type=int,
                        help="webp only: libwebp's effort 0..6, 0 fastest (about 3x faster than "
                        "the default encoder, files about 8%% larger; default: OpenCV's encoder, "
                        "effort 4)")
    parser.add_argument("--run-id", help="run id recorded in lineage (default: derived from the "
                        "inputs, step and code version, so reruns resume)")
    parser.add_argument("--keep-columns", help="comma-separated images columns to carry onto "
                        "crops and lineage (default: all small scalar columns; '' for none)")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="reject images whose header declares more pixels (default 178956970)")
    parser.add_argument("--max-detections", type=int, default=10_000,
                        help="detections per image beyond this become error rows")
    parser.add_argument("--rows-per-shard", type=int, default=32,
                        help="images per output shard (the unit of retry and resume)")
    parser.add_argument("--allow-uris", default="",
                        help="comma-separated prefixes that a 'uri' column (or a Hugging Face "
                        "image 'path') may name, e.g. s3://bucket/images/,file:///data/; "
                        "nothing else is read (default: none)")
    parser.add_argument("--max-image-bytes", type=int, default=256 << 20,
                        help="fetched image objects larger than this become error rows")
    parser.add_argument("--allow-foreign-files", action="store_true",
                        help="write into an --output that holds files this job did not write "
                        "(they are never read or deleted)")
    parser.add_argument("--reduced-decode", action="store_true",
                        help="crop_and_resize only: decode a JPEG at 1/2, 1/4 or 1/8 size when "
                        "every box on it shrinks at least that much (faster; values differ "
                        "slightly from the exact path, see README)")


def _ray_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a "
                        "local Ray on 127.0.0.1)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cropjob", description="Exact image crops at scale on Ray Data.",
        epilog="example:\n  python -m jobs demo", formatter_class=HelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a crop job", epilog=RUN_EXAMPLE,
                              formatter_class=HelpFormatter)
    _job_arguments(run)
    _ray_arguments(run)

    validate = commands.add_parser(
        "validate", help="check the inputs and the step without running",
        epilog="example:\n  python -m jobs validate --images data/images/ --detections "
               "data/detections/ --step '{\"type\": \"roboflow_core/dynamic_crop@v1\"}'",
        formatter_class=HelpFormatter)
    _job_arguments(validate, output_required=False)

    demo = commands.add_parser(
        "demo", help="generate a demo dataset from real photographs and crop it on a local Ray",
        epilog="example:\n  python -m jobs demo --output demo-output",
        formatter_class=HelpFormatter)
    demo.add_argument("--output", default="demo-output", help="folder for inputs and outputs")
    demo.add_argument("--images", type=int, default=48, help="number of demo images")
    _ray_arguments(demo)

    # Commands that live in their own modules: each module has add_arguments(parser) and
    # command(args) -> int, and is imported only when its command runs.
    for name, module, summary in PLUGGED_COMMANDS:
        if not _importable(module):
            continue
        sub = commands.add_parser(name, help=summary,
                                  formatter_class=HelpFormatter)
        importlib.import_module(module).add_arguments(sub)
    return parser


def _config(args):
    from cropcore.codec import DEFAULT_MAX_PIXELS
    from jobs.pipeline import JobConfig

    keep = None
    if args.keep_columns is not None:
        keep = tuple(c.strip() for c in args.keep_columns.split(",") if c.strip())
    return JobConfig(
        images=args.images, detections=args.detections, output=args.output or "",
        step=_step_argument(args.step), image_format=args.format, quality=args.quality,
        webp_method=args.webp_method, run_id=args.run_id, keep_columns=keep,
        max_pixels=DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels,
        max_detections=args.max_detections,
        rows_per_shard=args.rows_per_shard, reduced_decode=args.reduced_decode,
        allow_uris=args.allow_uris, max_image_bytes=args.max_image_bytes,
        allow_foreign_files=args.allow_foreign_files,
    )


def format_summary(summary) -> str:
    rate = summary.crops / summary.seconds if summary.seconds else 0.0
    rows = [
        ("run", f"{summary.run_id} ({summary.status})"),
        ("images", f"{summary.images} ({summary.images_decoded} decoded, "
                   f"{summary.images_without_detections} without detections)"),
        ("detections", f"{summary.detections}"),
        ("crops", f"{summary.crops}"),
        *((("unmasked", f"{summary.unmasked} (background removal asked, no mask or polygon)"),)
          if getattr(summary, "unmasked", 0) else ()),
        ("errors", f"{summary.error_count}"),
        *((f"  {reason}", f"{n}") for reason, n in sorted(summary.errors.items())),
        ("seconds", f"{summary.seconds:.1f} ({rate:.0f} crops/s)"),
        ("output", summary.output),
    ]
    if summary.shards_skipped:
        rows.insert(1, ("resumed", f"{summary.shards_skipped} shards were already committed"))
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join(f"{label:<{width}}{value}" for label, value in rows)


def _run(args) -> int:
    from jobs import pipeline, raycompat

    # Every check of the inputs and the output before starting Ray; the plan is made once.
    # The output is claimed once Ray has started and its nodes are known to see it (run).
    prepared = pipeline.prepare(_config(args))
    try:
        raycompat.check_reachable(args.address)
    except ConnectionError as error:
        raise pipeline.JobError(f"{error} (nothing was claimed or written)") from None
    pipeline.check_output(prepared)
    raycompat.init(args.address, args.num_cpus)
    raycompat.configure_progress(sys.stderr.isatty(), args.verbose)
    summary = pipeline.run(prepared)
    print(format_summary(summary))
    return 0


def _validate(args) -> int:
    from jobs import pipeline

    prepared = pipeline.prepare(_config(args))
    output = ""
    if prepared.output is not None:
        state = pipeline.check_output(prepared, leave_no_folder=True)
        output = ("; output committed by this run already" if state.manifest
                  else f"; output {prepared.output.url} can be claimed")
    plan = prepared.plan
    print(f"ok: {plan.num_images} images in {len(plan.units)} row groups, "
          f"{plan.num_detections} detections in {len(plan.detection_parts)} row groups; "
          f"step {prepared.context.step.type}{output}")
    return 0


DEMO_MARK = ".cropcore-demo"


def claim_demo_folder(root: Path) -> None:
    """Make ``root`` the demo's folder, or refuse (``JobError``): the demo replaces what it
    finds under ``input/`` and ``crops-run/``, so it only works in a folder that is new, empty,
    or that an earlier demo made (it holds the demo's mark file)."""
    from jobs.pipeline import JobError

    if root.exists() and not root.is_dir():
        raise JobError(f"demo --output {root} is a file, not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / DEMO_MARK).is_file():
        raise JobError(f"demo --output {root} already holds files that no demo wrote, and the "
                       f"demo replaces its input/ and crops-run/ folders: choose a new or "
                       f"empty folder")
    root.mkdir(parents=True, exist_ok=True)
    (root / DEMO_MARK).write_text("made by `python -m jobs demo`, which may replace anything "
                                  "in this folder\n")


def _demo(args) -> int:
    from jobs import demodata, pipeline, raycompat

    root = Path(args.output).resolve()
    claim_demo_folder(root)
    inputs = root / "input"
    print(f"generating {args.images} demo images from scikit-image's photographs in {inputs}")
    counts = demodata.make_dataset(str(inputs), demodata.DatasetSpec(num_images=args.images,
                                                                     rows_per_group=8))
    print(f"  {counts['images']} images, {counts['detections']} detections")
    step = steps.parse_step({"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 1.0,
                             "background_color": "#000000"})
    config = pipeline.JobConfig(images=str(inputs / "images"),
                                detections=str(inputs / "detections"),
                                output=str(root / "crops-run"), step=step, rows_per_shard=8)
    # The demo owns this folder (claim_demo_folder): each demo is a fresh run, never a resume.
    shutil.rmtree(root / "crops-run", ignore_errors=True)
    raycompat.init(args.address, args.num_cpus)
    raycompat.configure_progress(sys.stderr.isatty(), args.verbose)
    summary = pipeline.run(config)
    print(format_summary(summary))
    print(f"look at the crops: python -m jobs report {root / 'crops-run'}")
    return 0


_TRACEBACK_LAST = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)?): ?(.*)$")


def describe_failure(error: BaseException) -> str:
    """``Type: message`` of a failure's root cause, on one line, credentials redacted.

    Ray re-raises a task's error as ``RayTaskError(...)`` around Ray Data's own
    ``UserCodeException``; the user code's exception survives only as the traceback text at
    the start of the message, so its last ``Type: message`` line there is the root cause.
    """
    while error.__cause__ is not None and not type(error).__name__.startswith("RayTaskError"):
        error = error.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    if type(error).__name__.startswith("RayTaskError"):
        original = text.split("The above exception was the direct cause")[0]
        for line in reversed(original.splitlines()):
            match = _TRACEBACK_LAST.match(line)
            if match and not line.startswith(" "):
                name, message = match.group(1).rsplit(".", 1)[-1], match.group(2).strip()
                return storage.redact(f"{name}: {message}" if message else name)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    message = lines[-1] if lines else ""
    name = type(error).__name__
    return storage.redact(f"{name}: {message}" if message else name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # One line per stage on stderr; -v adds timestamps and other libraries' info lines.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s" if args.verbose
                        else "%(message)s")
    logging.getLogger("jobs").setLevel(logging.INFO)
    from jobs.pipeline import JobError

    handlers = {"run": _run, "validate": _validate, "demo": _demo}
    if args.command not in handlers:
        module = next(m for n, m, _ in PLUGGED_COMMANDS if n == args.command)
        handlers[args.command] = importlib.import_module(module).command
    try:
        return handlers[args.command](args)
    except (steps.StepError, schema.SchemaError, storage.StorageError, JobError) as error:
        print(f"error: {storage.redact(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was committed for the shards in flight", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - a failed task: one line, the rest under -v
        if args.verbose:
            raise
        print(f"error: the job failed: {describe_failure(error)}; committed shards are kept: "
              f"rerun the same command to resume (-v for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
