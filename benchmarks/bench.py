"""The benchmark: ``python -m jobs bench`` from a checkout. Kernels and the job vs their peers.

What one run measures (BENCHMARKS.md has the figures and how to read them):

kernels   ``cropcore.crop_and_resize`` vs ``tf.image.crop_and_resize`` vs a ``cv2.warpAffine``
          per-box loop, at 1 and 2 threads, on 1x1080x1920x3 uint8 with 256 boxes of 64-600 px
          resized to 224x224 bilinear; ``cropcore.dynamic_crop`` with mask background removal vs
          a plain per-detection loop of Roboflow's algorithm. Each thread count runs in its own
          process, because TensorFlow fixes its thread pools when it starts.
pipeline  crops/s of the dynamic-crop job (JPEG q90, mask_opacity 1.0, the CLI's other
          defaults) on a local Ray started with 1 and then 2 CPUs, against the codec floor
          (processes that only decode each image once and encode each crop once), a first-try
          Ray Data pipeline (row-wise ``flat_map``, PIL, a Python loop over detections) and
          Daft 0.7.26 (in its own venv, because it pins pyarrow<26). Also the CPU seconds each
          kind of process (driver, workers, Ray daemons) spent.
memory    peak PSS and RSS of the job's driver and all its Ray processes, at 1x and 4x data.
profile   ``jobs.udfs.crop_units`` in-process on one core (no Ray) under cProfile, grouped.

Throughputs are marginal: every system runs a dataset of N and of k*N images (the first N images
are the same) and the rate is ``(crops(kN) - crops(N)) / (seconds(kN) - seconds(N))``, so fixed
costs (start-up, planning, the manifest) cancel. The job and the floor run each size ``repeats``
times, interleaved (floor, job, floor, job: a slower spell of a shared machine then weighs on
both), and keep the fastest. Ray sessions, kernel runs and Daft each run in a child process, so
each gets fresh thread pools, and the memory of one cannot leak into another.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from benchmarks.datagen import (
    JPEG_QUALITY,
    ROWS_PER_GROUP,
    photo,
    prepare_datasets,
    random_boxes,
    resolution_label,
)
from benchmarks.memory import (
    MemorySampler,
    PeakOfChild,
    cpu_seconds_since,
    cpu_snapshot,
    foreign_cpu_seconds,
    machine_busy_seconds,
)

__all__ = [
    "FULL",
    "QUICK",
    "MemorySampler",
    "Sizes",
    "add_arguments",
    "codec_floor",
    "command",
    "first_try_pipeline",
    "marginal_rate",
    "reference_dynamic_crop",
    "warp_affine_crops",
]

REPO = Path(__file__).resolve().parent.parent
DAFT_JOB = Path(__file__).resolve().parent / "daft_job.py"
DAFT_PYTHON = REPO / ".bench-venvs" / "daft" / "bin" / "python"
DAFT_SETUP = ("python3 -m venv .bench-venvs/daft && "
              ".bench-venvs/daft/bin/pip install daft==0.7.26 scikit-image")
DYNAMIC_STEP = {"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 1.0,
                "background_color": "#000000"}
QUICK_ROWS_PER_GROUP = 8
WARMUP_UNITS = 4  # row groups in the warm-up run: enough to start every worker
RESOLUTIONS = ((1920, 1080), (640, 480))
PARTS = ("kernels", "pipeline", "naive", "daft", "profile", "png")
CHILD_ENV = {
    # Keep Ray on loopback and quiet; no telemetry from Ray or Daft.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DO_NOT_TRACK": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}

EXAMPLE = """examples:
  python -m jobs bench --quick --json bench-quick.json     (a smoke run: a few minutes)
  python -m jobs bench --json bench-output/results.json    (the full run: ~19 min on 2 cores)
  python -m jobs bench --quick --parts pipeline --images 8 --resolutions 640x480
the Daft comparison needs its own venv (Daft pins pyarrow<26), created once with:
  """ + DAFT_SETUP


@dataclass(frozen=True)
class Sizes:
    """How much each measurement does. Image counts are the small size N of a marginal pair."""

    kernel_repeats: int  # timed calls per kernel; the median is reported
    kernel_boxes: int
    dynamic_detections: int
    job_images: dict  # "WxH" -> N; the job and the floor run N and job_factor * N images
    job_factor: int
    peer_images: dict  # "WxH" -> N for the first-try Ray Data pipeline; it runs N and 3N
    daft_images: dict  # "WxH" -> N for Daft; it runs N and 3N
    daft_morsel_size: int
    repeats: int  # the job and the floor run each size this often; the fastest run counts


FULL = Sizes(kernel_repeats=10, kernel_boxes=256, dynamic_detections=27,
             job_images={"1920x1080": 150, "640x480": 300}, job_factor=4,
             peer_images={"1920x1080": 48, "640x480": 96},
             daft_images={"1920x1080": 16, "640x480": 32}, daft_morsel_size=32,
             repeats=2)
QUICK = Sizes(kernel_repeats=3, kernel_boxes=256, dynamic_detections=27,
              job_images={"1920x1080": 16, "640x480": 32}, job_factor=4,
              peer_images={"1920x1080": 8, "640x480": 16},
              daft_images={"1920x1080": 4, "640x480": 8}, daft_morsel_size=32,
              repeats=1)
PEER_FACTOR = 3
NAIVE_CPUS = 2


# -- command line ---------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    """Options of ``python -m jobs bench``."""
    parser.epilog = EXAMPLE
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke run (a few minutes; its ratios mean "
                             "little); default: full sizes")
    parser.add_argument("--json", default=None,
                        help="write the results here too (always: WORKDIR/results.json)")
    parser.add_argument("--workdir", default="bench-output",
                        help="generated datasets (kept for reruns) and scratch outputs")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--resolutions", default=",".join(f"{w}x{h}" for w, h in RESOLUTIONS),
                        help="comma-separated WxH of the generated images")
    parser.add_argument("--cpus", default="1,2",
                        help="CPU counts of the job and the floor (scaling needs 1,2)")
    parser.add_argument("--images", type=int, default=None,
                        help="override N, the small dataset size of the job and the floor")
    parser.add_argument("--rows-per-group", type=int, default=None,
                        help="images per Parquet row group of the generated data (the job's "
                             f"unit of work; default {ROWS_PER_GROUP}, {QUICK_ROWS_PER_GROUP} "
                             "with --quick)")
    parser.add_argument("--daft-python", default=str(DAFT_PYTHON),
                        help="the Python of the Daft venv")


def command(args) -> int:
    """Run the benchmark, print the table, write the JSON; 0 unless the arguments are bad."""
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"error: --parts takes {', '.join(PARTS)}, got {', '.join(unknown)}",
              file=sys.stderr)
        return 2
    try:
        resolutions = [_parse_resolution(r) for r in args.resolutions.split(",") if r.strip()]
        cpus = sorted({int(c) for c in args.cpus.split(",") if c.strip()})
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not cpus or min(cpus) < 1:
        print(f"error: --cpus takes positive CPU counts such as 1,2, got {args.cpus!r}",
              file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    rows_per_group = args.rows_per_group if args.rows_per_group is not None else (
        QUICK_ROWS_PER_GROUP if args.quick else ROWS_PER_GROUP)
    if rows_per_group < 1:
        print(f"error: --rows-per-group must be positive, got {rows_per_group}", file=sys.stderr)
        return 2
    if args.images is not None:
        if args.images < 1:
            print(f"error: --images must be positive, got {args.images}", file=sys.stderr)
            return 2
        sizes = replace(sizes, job_images={k: args.images for k in sizes.job_images})
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    results = run_benchmark(workdir, sizes, parts, resolutions, cpus, Path(args.daft_python),
                            mode="quick" if args.quick else "full",
                            rows_per_group=rows_per_group)
    print(format_report(results))
    text = json.dumps(results, indent=2, sort_keys=True)
    (workdir / "results.json").write_text(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


def _parse_resolution(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"a resolution is WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    if width < 64 or height < 64:
        raise ValueError(f"a resolution must be at least 64x64, got {text!r}")
    return width, height


# -- the whole run ---------------------------------------------------------------------------------
def run_benchmark(workdir: Path, sizes: Sizes, parts: list[str], resolutions, cpus: list[int],
                  daft_python: Path, mode: str, rows_per_group: int = ROWS_PER_GROUP) -> dict:
    """Every requested measurement; returns the results dict that the table and JSON show."""
    results: dict = {"mode": mode, "machine": machine_info(),
                     "sizes": asdict(sizes) | {"rows_per_group": rows_per_group},
                     "load": {"start": _load()}, "kernels": {}, "pipeline": {}}
    if "kernels" in parts:
        for threads in (1, 2):
            _say(f"kernels, {threads} thread(s)")
            spec = {"threads": threads, "repeats": sizes.kernel_repeats,
                    "boxes": sizes.kernel_boxes, "detections": sizes.dynamic_detections}
            results["kernels"][str(threads)] = _child("kernels", spec, workdir,
                                                      env={"NUMBA_NUM_THREADS": str(threads),
                                                           "OMP_NUM_THREADS": str(threads)})
    if {"pipeline", "naive", "daft", "profile", "png"} & set(parts):
        for size_wh in resolutions:
            results["pipeline"][resolution_label(size_wh)] = _run_pipeline_part(
                workdir, sizes, parts, size_wh, cpus, daft_python, rows_per_group)
    results["load"]["end"] = _load()
    results["targets"] = evaluate_targets(results)
    return results


def _run_pipeline_part(workdir, sizes, parts, size_wh, cpus, daft_python, rows_per_group):
    label = resolution_label(size_wh)
    n = sizes.job_images.get(label, min(sizes.job_images.values()))
    job_counts = (n, sizes.job_factor * n)
    peer_n = sizes.peer_images.get(label, min(sizes.peer_images.values()))
    daft_n = sizes.daft_images.get(label, min(sizes.daft_images.values()))
    warmup = WARMUP_UNITS * rows_per_group
    wanted = {warmup}
    if "pipeline" in parts:
        wanted |= set(job_counts)
    if "naive" in parts:
        wanted |= {peer_n, PEER_FACTOR * peer_n}
    if "daft" in parts:
        wanted |= {daft_n, PEER_FACTOR * daft_n}
    if {"profile", "png"} & set(parts):
        wanted.add(n)
    _say(f"{label}: generating up to {max(wanted)} images (kept in {workdir / 'data'})")
    data = prepare_datasets(workdir / "data", size_wh, sorted(wanted), rows_per_group)
    part: dict = {"datasets": {str(k): v["counts"] for k, v in data.items()}}
    if "pipeline" in parts:
        part["floor"], part["turbo_floor"], part["job"] = {}, {}, {}
        for num_cpus in cpus:
            _say(f"{label}: the job on a local Ray with {num_cpus} CPU(s), interleaved with the "
                 f"codec floors ({num_cpus} process(es))")
            spec = {"num_cpus": num_cpus, "warmup": str(data[warmup]["root"]),
                    "runs": [{"images": k, "root": str(data[k]["root"])} for k in job_counts],
                    "scratch": str(workdir / "scratch"), "memory": num_cpus == max(cpus),
                    "repeats": sizes.repeats, "floors": True}
            session = _child("job", spec, workdir)
            key = str(num_cpus)
            if "runs" not in session:
                part["job"][key] = part["floor"][key] = part["turbo_floor"][key] = session
                continue
            part["job"][key] = _with_rate(session["runs"])
            for name in FLOORS:
                part[name][key] = _with_rate(session[name])
    if "naive" in parts:
        part["naive"] = {}
        # As written, a single-file input is one read task fused with the flat_map: one busy
        # core. The variant adds the one-line fix a user finds next; targets use the faster.
        for variant, blocks in (("as_written", None), ("repartitioned", 2 * NAIVE_CPUS)):
            _say(f"{label}: the first-try Ray Data pipeline, {variant} ({NAIVE_CPUS} CPUs)")
            spec = {"num_cpus": NAIVE_CPUS, "blocks": blocks, "repeats": sizes.repeats,
                    "warmup": str(data[warmup]["root"]),
                    "runs": [{"images": k, "root": str(data[k]["root"])}
                             for k in (peer_n, PEER_FACTOR * peer_n)],
                    "scratch": str(workdir / "scratch")}
            session = _child("naive", spec, workdir)
            part["naive"][variant] = _with_rate(session["runs"]) if "runs" in session \
                else session
    if "daft" in parts:
        _say(f"{label}: Daft")
        part["daft"] = daft_benchmark(daft_python, [data[k]["root"] for k in
                                                    (daft_n, PEER_FACTOR * daft_n)],
                                      workdir, sizes.daft_morsel_size)
    if "png" in parts:
        _say(f"{label}: the crop UDF in-process with PNG output, fpng vs OpenCV (one core)")
        part["png"] = _child("png", {"root": str(data[n]["root"]), "images": n,
                                     "repeats": max(2, sizes.repeats),
                                     "scratch": str(workdir / "scratch")}, workdir)
    if "profile" in parts:
        _say(f"{label}: profiling jobs.udfs.crop_units in-process (one core, no Ray)")
        part["profile"] = _child("profile", {"root": str(data[n]["root"]), "images": n,
                                             "scratch": str(workdir / "scratch")}, workdir)
    return part


def _fastest(tries: list[dict]) -> dict:
    """The fastest of repeated runs of one size (the least disturbed by other load), with every
    try's seconds kept in ``seconds_all``."""
    best = min(tries, key=lambda r: r["seconds"])
    return best | {"seconds_all": [r["seconds"] for r in tries]}


def _with_rate(runs: list[dict]) -> dict:
    if any("error" in r for r in runs):
        return {"runs": runs, "error": next(r["error"] for r in runs if "error" in r)}
    return rates(runs)


def rates(runs: list[dict]) -> dict:
    """The marginal rate of a pair of runs, and the larger run's plain average. A marginal rate
    over twice the average means the smaller run paid a fixed cost the larger did not (a stall,
    a worker start): the pair is flagged ``suspect`` and should be rerun."""
    marginal = marginal_rate(runs[0], runs[-1])
    average = runs[-1]["crops"] / runs[-1]["seconds"] if runs[-1]["seconds"] else None
    suspect = marginal is None or (average is not None and marginal > 2 * average)
    return {"runs": runs, "marginal_crops_per_s": marginal, "average_crops_per_s": average,
            "suspect": suspect}


def marginal_rate(small: dict, large: dict) -> float | None:
    """``(crops(large) - crops(small)) / (seconds(large) - seconds(small))``: fixed costs cancel.
    None when the difference is not positive (too small a size difference to measure)."""
    crops = large["crops"] - small["crops"]
    seconds = large["seconds"] - small["seconds"]
    if crops <= 0 or seconds <= 0:
        return None
    return crops / seconds


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')} load {_load()[0]:.2f}] {message}", file=sys.stderr,
          flush=True)


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def machine_info() -> dict:
    """CPU model and count, memory, and the versions that matter."""
    import cv2
    import numpy as np
    import pyarrow
    import ray

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        import psutil

        memory = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return {"cpu_model": model, "cpus": os.cpu_count(), "memory_gib": memory,
            "python": sys.version.split()[0], "ray": ray.__version__, "numpy": np.__version__,
            "pyarrow": pyarrow.__version__, "opencv": cv2.__version__}


# -- child processes -------------------------------------------------------------------------------
_CHILD_CODE = ("import sys; from benchmarks.bench import child_main; "
               "sys.exit(child_main(sys.argv[1:]))")
_child_count = 0


def _child(kind: str, spec: dict, workdir: Path, env: dict | None = None) -> dict:
    """Run ``kind`` in a fresh Python process; its result dict, or ``{"error": ...}``."""
    global _child_count
    _child_count += 1
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stem = logs / f"{_child_count:02d}-{kind}"
    spec_path, result_path, log_path = (Path(f"{stem}.{s}") for s in ("spec.json", "result.json",
                                                                         "log"))
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    child_env = {**os.environ, **CHILD_ENV, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    with open(log_path, "w") as log:
        code = subprocess.run([sys.executable, "-c", _CHILD_CODE, kind, str(spec_path),
                               str(result_path)], cwd=REPO, env=child_env, stdout=log,
                              stderr=subprocess.STDOUT).returncode
    if code != 0 or not result_path.exists():
        return {"error": f"{kind} child exited with {code}: {_tail(log_path)} (log: {log_path})"}
    return json.loads(result_path.read_text())


def _tail(path: Path, lines: int = 3) -> str:
    text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(text[-lines:])[-400:]


def child_main(argv: list[str]) -> int:
    """Entry point of a child process: ``kind spec.json result.json``."""
    kind, spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text())
    handlers = {"kernels": kernel_session, "job": job_session, "naive": naive_session,
                "profile": profile_session, "png": png_session}
    result = handlers[kind](spec)
    Path(result_path).write_text(json.dumps(result))
    return 0


# -- kernels ---------------------------------------------------------------------------------------
def warp_affine_crops(image, boxes, crop_size_hw: tuple[int, int], out=None):
    """The usual OpenCV way: one ``cv2.warpAffine`` per box, sampling the same grid as
    TensorFlow (corner-aligned). Close to TF, not exact: OpenCV interpolates in fixed point.

    Args:
        image (ndarray[H, W, C] uint8), boxes (ndarray[N, 4]): normalized ``(y1, x1, y2, x2)``.

    Returns:
        ndarray[N, crop_h, crop_w, C] uint8.
    """
    import cv2
    import numpy as np

    height, width = image.shape[:2]
    crop_h, crop_w = crop_size_hw
    if out is None:
        out = np.empty((len(boxes), crop_h, crop_w, image.shape[2]), dtype=image.dtype)
    for k, (y1, x1, y2, x2) in enumerate(boxes.tolist()):
        top, left = y1 * (height - 1), x1 * (width - 1)
        step_y = (y2 - y1) * (height - 1) / max(crop_h - 1, 1)
        step_x = (x2 - x1) * (width - 1) / max(crop_w - 1, 1)
        matrix = np.array([[step_x, 0.0, left], [0.0, step_y, top]])
        cv2.warpAffine(image, matrix, (crop_w, crop_h), dst=out[k],
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out


def reference_dynamic_crop(image, xyxy, masks, keypoints, polygons, opacity: float,
                           color_bgr: tuple[int, int, int]) -> list:
    """Roboflow's dynamic crop as a plain per-detection loop (the comparison for
    ``cropcore.dynamic_crop``): round the box, clamp, slice; cut the full-frame mask; blend the
    whole crop with a background image by ``cv2.addWeighted``; translate the predictions.

    Args:
        image (ndarray[H, W, 3] uint8), xyxy (ndarray[N, 4] float), masks (ndarray[N, H, W]
        bool), keypoints (ndarray[N, K, 3]), polygons (list of ndarray[P, 2]).

    Returns:
        one dict (``image``, ``xyxy``, ``mask``, ``keypoints``, ``polygon``) or None per box.
    """
    import cv2
    import numpy as np

    height, width = image.shape[:2]
    crops = []
    for i in range(len(xyxy)):
        x0, y0, x1, y1 = (int(v) for v in np.round(xyxy[i]))
        x0, x1 = min(max(x0, 0), width), min(max(x1, 0), width)
        y0, y1 = min(max(y0, 0), height), min(max(y1, 0), height)
        crop = image[y0:y1, x0:x1]
        if crop.size == 0:
            crops.append(None)
            continue
        mask = masks[i][y0:y1, x0:x1]
        if opacity > 0:
            background = (np.ones_like(crop) * np.array(color_bgr, dtype=np.uint8))
            inside = np.stack([mask] * 3, axis=-1)
            crop = cv2.addWeighted(np.where(inside, crop, background), opacity, crop,
                                   1.0 - opacity, 0)
        crops.append({"image": crop, "xyxy": xyxy[i] - np.array([x0, y0, x0, y0], float),
                      "mask": mask, "keypoints": keypoints[i] - np.array([x0, y0, 0.0]),
                      "polygon": polygons[i] - np.array([x0, y0], float)})
    return crops


def _time_ms(fn, repeats: int) -> dict:
    return _time_ms_interleaved({"fn": fn}, repeats)["fn"]


def _time_ms_interleaved(fns: dict, repeats: int) -> dict:
    """Each function's best and median milliseconds over ``repeats`` calls, after one warm-up
    call each (compilation, caches, first-touch allocations). With several functions the calls
    alternate (a, b, a, b, ...), so that a slow spell of a shared machine hits them alike and
    their ratio is fair."""
    for fn in fns.values():
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: {"median_ms": round(statistics.median(t), 2), "min_ms": round(min(t), 2),
                   "repeats": repeats} for name, t in times.items()}


def kernel_session(spec: dict) -> dict:
    """Child process: the kernel timings at ``spec["threads"]`` threads."""
    import cv2
    import numpy as np

    from cropcore import Detections, dynamic_crop

    threads = spec["threads"]
    cv2.setNumThreads(threads)
    import numba

    numba.set_num_threads(threads)
    size_wh = (1920, 1080)
    image = photo(size_wh)
    boxes = random_boxes(spec["boxes"], size_wh)
    indices = np.zeros(len(boxes), np.int32)
    batch = image[None]
    crop_hw = (224, 224)
    result: dict = {"threads": threads, "load_start": _load(),
                    "crop_and_resize": {"image": "1x1080x1920x3 uint8",
                                        "boxes": len(boxes), "crop_size": list(crop_hw)}}
    car = result["crop_and_resize"]
    car.update(_tensorflow_threads(threads))
    timings, reference = _crop_and_resize_timings(batch, boxes, indices, crop_hw,
                                                  spec["repeats"])
    car.update(timings)
    warped = np.empty((len(boxes), *crop_hw, 3), np.uint8)
    car["cv2_warp_affine"] = _time_ms(lambda: warp_affine_crops(image, boxes, crop_hw, warped),
                                        spec["repeats"])
    if reference is not None:
        car["cv2_max_abs_diff_vs_tf"] = float(np.abs(warped.astype(np.float32)
                                                     - reference).max())
    # The same image as float32: TensorFlow's float32 path skips its conversion, so its ratio to
    # cropcore is not the uint8 one.
    car["float32"] = {"image": "1x1080x1920x3 float32", **_crop_and_resize_timings(
        batch.astype(np.float32), boxes, indices, crop_hw, spec["repeats"])[0]}

    rng = np.random.default_rng(2)
    width, height = size_wh
    n = spec["detections"]
    box_w, box_h = rng.uniform(64, 600, n), rng.uniform(64, 600, n)
    x0 = rng.uniform(-0.1 * box_w, width - 0.9 * box_w)
    y0 = rng.uniform(-0.1 * box_h, height - 0.9 * box_h)
    xyxy = np.stack([x0, y0, x0 + box_w, y0 + box_h], axis=1)
    masks = np.zeros((n, height, width), bool)
    for i, (a, b, c, d) in enumerate(xyxy):
        canvas = np.zeros((height, width), np.uint8)
        cv2.ellipse(canvas, (round((a + c) / 2), round((b + d) / 2)),
                    (max(1, round((c - a) / 2)), max(1, round((d - b) / 2))), 0, 0, 360, 1, -1)
        masks[i] = canvas.astype(bool)
    centres = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                        np.ones(n)], axis=1)[:, None, :]
    polygons = [np.array([[a, b], [c, b], [(a + c) / 2, d]]) for a, b, c, d in xyxy]
    detections = Detections(xyxy=xyxy, detection_id=[f"d{i}" for i in range(n)], mask=masks,
                            keypoints=centres, polygons=polygons)
    color = (0, 0, 0)
    ours = dynamic_crop(image, detections, 1.0, color)
    theirs = reference_dynamic_crop(image, xyxy, masks, centres, polygons, 1.0, color)
    agree = all((a is None) == (b is None) and (a is None or np.array_equal(a.image, b["image"]))
                for a, b in zip(ours, theirs, strict=True))
    result["dynamic_crop"] = {
        "image": "1080x1920x3 uint8", "detections": n, "masked": n, "mask_opacity": 1.0,
        "cropcore": _time_ms(lambda: dynamic_crop(image, detections, 1.0, color),
                               spec["repeats"]),
        "reference_loop": _time_ms(lambda: reference_dynamic_crop(
            image, xyxy, masks, centres, polygons, 1.0, color), spec["repeats"]),
        "same_pixels": bool(agree),
    }
    result["load_end"] = _load()
    return result


def _tensorflow_threads(threads: int) -> dict:
    """Fix TensorFlow's thread pools (only possible before its first op); its version, or
    nothing when it does not import (the timings then report why)."""
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except Exception:  # noqa: BLE001 - TF is optional
        return {}
    return {"tensorflow_version": tf.__version__}


def _crop_and_resize_timings(batch, boxes, indices, crop_hw, repeats: int) -> tuple[dict, object]:
    """cropcore's crop_and_resize timed with a new output per call (the default) and writing
    into one reused output (``out=``, as a batch loop would), TensorFlow's on the same inputs,
    the three interleaved call by call, and whether the two outputs are bit-exact; also
    TensorFlow's output (None without TF)."""
    import numpy as np

    from cropcore import crop_and_resize

    ours = crop_and_resize(batch, boxes, indices, crop_hw)
    reused = np.empty_like(ours)
    calls = {"cropcore": lambda: crop_and_resize(batch, boxes, indices, crop_hw),
             "cropcore_out": lambda: crop_and_resize(batch, boxes, indices, crop_hw, out=reused)}
    reference, extra = None, {}
    try:
        import tensorflow as tf

        tf_batch, tf_boxes, tf_indices = (tf.constant(batch), tf.constant(boxes),
                                          tf.constant(indices))

        def tf_call():
            return tf.image.crop_and_resize(tf_batch, tf_boxes, tf_indices, crop_hw).numpy()

        reference = tf_call()
        calls["tensorflow"] = tf_call
        extra["cropcore_bit_exact_with_tf"] = bool(np.array_equal(ours, reference))
    except Exception as error:  # noqa: BLE001 - TF is optional: report why it is missing
        extra["tensorflow"] = {"error": f"{type(error).__name__}: {error}"[:300]}
    del ours  # its memory is what a new output reuses, as TensorFlow's allocator does
    return {**_time_ms_interleaved(calls, repeats), **extra}, reference


# -- Ray task gaps --------------------------------------------------------------------------------
def task_gaps(events: list[dict], since: float) -> dict:
    """The job's Ray tasks after ``since`` (epoch seconds), from ``ray.timeline()``: how many,
    their mean duration, and the mean idle gap between consecutive tasks on one worker (time
    in which the worker waits for the scheduler to hand it the next task)."""
    spans: dict[str, list] = {}
    for event in events:
        if event.get("ph") == "X" and "crop_units" in event.get("cat", "") \
                and event["ts"] / 1e6 >= since:
            spans.setdefault(event["tid"], []).append((event["ts"] / 1e6,
                                                       (event["ts"] + event["dur"]) / 1e6))
    durations, gaps = [], []
    for worker_spans in spans.values():
        worker_spans.sort()
        durations += [end - start for start, end in worker_spans]
        gaps += [b[0] - a[1] for a, b in itertools.pairwise(worker_spans)]
    return {"tasks": len(durations), "workers": len(spans),
            "mean_task_s": round(statistics.mean(durations), 3) if durations else None,
            "mean_gap_s": round(statistics.mean(gaps), 3) if gaps else None}


# -- the job ---------------------------------------------------------------------------------------
def job_session(spec: dict) -> dict:
    """Child process: a fresh local Ray with ``num_cpus``; a warm-up run, then each timed run,
    and with ``spec["floors"]`` the codec floors (``num_cpus`` processes) just before each.
    With ``spec["memory"]`` each run is repeated with the memory sampler on: reading every
    process's ``smaps_rollup`` costs a few ms per process, which would slow the timed runs."""
    import ray

    from jobs import raycompat

    raycompat.init(num_cpus=spec["num_cpus"])
    raycompat.configure_progress(False)
    try:
        scratch = Path(spec["scratch"])
        _job_run(Path(spec["warmup"]), scratch / "job-warmup")
        floors = FLOORS if spec.get("floors") else {}
        tries: dict = {(name, run["images"]): [] for run in spec["runs"]
                       for name in ("job", *floors)}
        # Each repeat runs every size of the floors and then the job, one after the other, so
        # a slower spell of a shared machine weighs on both sides of a ratio alike.
        for _ in range(spec.get("repeats", 1)):
            for run in spec["runs"]:
                root, images = Path(run["root"]), run["images"]
                for name, decoder in floors.items():
                    tries[name, images].append(codec_floor(root, spec["num_cpus"], decoder))
                tries["job", images].append(_job_run(root, scratch / f"job-{images}"))
        result = {name: [_fastest(tries[name, run["images"]]) | {"images": run["images"]}
                         for run in spec["runs"]] for name in ("job", *floors)}
        runs = result.pop("job")
        # How the tasks of the last run filled the workers, from Ray's own task timeline.
        last = tries["job", spec["runs"][-1]["images"]][-1]
        runs[-1]["tasks"] = task_gaps(ray.timeline(), since=last["started_at"])
        if spec.get("memory"):
            for run, timed in zip(spec["runs"], runs, strict=True):
                sampled = _job_run(Path(run["root"]), scratch / f"job-{run['images']}",
                                   memory=True)
                timed["memory"] = sampled["memory"] | {"seconds_while_sampling":
                                                       sampled["seconds"]}
        return {"num_cpus": spec["num_cpus"], "runs": runs, **result}
    finally:
        ray.shutdown()


def _job_run(root: Path, output: Path, memory: bool = False) -> dict:
    from jobs import steps
    from jobs.pipeline import JobConfig, run

    shutil.rmtree(output, ignore_errors=True)
    config = JobConfig(images=str(root / "images"), detections=str(root / "detections"),
                       output=str(output), step=steps.parse_step(DYNAMIC_STEP),
                       image_format="jpeg", quality=JPEG_QUALITY)
    load = _load()
    cpu_before, machine_before = cpu_snapshot(), machine_busy_seconds()
    started_at = time.time()
    with MemorySampler() if memory else contextlib.nullcontext() as sampler:
        started = time.perf_counter()
        summary = run(config)
        seconds = time.perf_counter() - started
    cpu = cpu_seconds_since(cpu_before)
    foreign = foreign_cpu_seconds(machine_before, cpu)
    shutil.rmtree(output, ignore_errors=True)
    result = {"crops": summary.crops, "errors": summary.error_count,
              "images_decoded": summary.images_decoded, "seconds": round(seconds, 3),
              "load_start": load, "cpu_seconds": cpu, "foreign_cpu_seconds": foreign,
              "started_at": started_at}
    if sampler is not None:
        result["memory"] = sampler.report()
    return result


# -- a profile of the job's UDF, without Ray -------------------------------------------------------
# (file suffix, function) -> what it is; cumulative times, chosen so that they do not overlap.
PROFILE_GROUPS = (
    (("cropcore/codec.py", "decode_image"), "decode (cv2.imdecode)"),
    (("cropcore/codec.py", "encode_image"), "encode (cv2.imencode JPEG q90)"),
    (("cropcore/masks.py", "cut_rle"), "mask: window mask and crop-frame RLE (cut_rle)"),
    (("cropcore/dynamic.py", "remove_background"), "mask: background blend"),
    (("jobs/udfs.py", "tables"), "shard tables (columns, lineage, predictions moved)"),
    (("jobs/sinks.py", "write_shard"), "write shards (Parquet, sha256 of files)"),
    (("pyarrow/parquet/core.py", "read_row_group"), "read the row group"),
)


def profile_session(spec: dict) -> dict:
    """Child process: ``jobs.udfs.crop_units`` on every unit of a dataset, in this process and
    on one core (no Ray): a warm-up pass, a timed pass, then a pass under cProfile. The profile
    is summarised into the groups of ``PROFILE_GROUPS`` plus the top functions by own time."""
    import cProfile
    import pstats

    root, scratch = Path(spec["root"]), Path(spec["scratch"])
    _udf_pass(root, scratch / "profile-warmup")
    crops, seconds = _udf_pass(root, scratch / "profile-timed")
    profiler = cProfile.Profile()
    _, profiled_seconds = _udf_pass(root, scratch / "profile-profiled", profiler)
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (cc, nc, tottime, cumtime, ..)
    groups = {}
    for (suffix, name), label in PROFILE_GROUPS:
        groups[label] = round(sum(v[3] for k, v in stats.items()
                                  if k[0].endswith(suffix) and k[2] == name), 4)
    # sha256 outside write_shard (which is a group of its own): crop ids and crop hashes.
    groups["sha256 of sources and crops"] = round(sum(
        timing[2] for k, v in stats.items() if "sha256" in k[2]
        for caller, timing in v[4].items() if caller[2] != "write_shard"), 4)
    groups["everything else (Python bookkeeping, Arrow tables)"] = round(
        profiled_seconds - sum(groups.values()), 4)
    top = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:15]
    return {"images": spec["images"], "crops": crops, "seconds": round(seconds, 3),
            "crops_per_s": round(crops / seconds, 1) if seconds else None,
            "profiled_seconds": round(profiled_seconds, 3), "groups_seconds": groups,
            "top_own_time": [{"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "calls": v[1],
                              "own_s": round(v[2], 4), "cumulative_s": round(v[3], 4)}
                             for k, v in top]}


def png_session(spec: dict) -> dict:
    """Child process: the crop UDF in-process on one core (as ``profile_session``), writing PNG
    crops, once with the PNG writer the job uses (fpng) and once with the writer it replaced
    (OpenCV at zlib level 1, which the encoder falls back to when fpng declines an image),
    interleaved ``repeats`` times; the fastest pass of each. Both write lossless PNG of the same
    pixels, so the ratio is what the writer alone changes in the job's per-core throughput."""
    from cropcore import codec

    root, scratch = Path(spec["root"]), Path(spec["scratch"])
    fpng_encode = codec._fpng_encode
    writers = {"fpng": fpng_encode, "opencv": lambda image, channels: b""}
    _udf_pass(root, scratch / "png-warmup", image_format="png")
    passes: dict[str, list[float]] = {name: [] for name in writers}
    crops = {}
    try:
        for _ in range(spec["repeats"]):
            for name, writer in writers.items():
                codec._fpng_encode = writer
                crops[name], seconds = _udf_pass(root, scratch / f"png-{name}",
                                                 image_format="png")
                passes[name].append(round(seconds, 3))
    finally:
        codec._fpng_encode = fpng_encode
    result = {"images": spec["images"]}
    for name, seconds in passes.items():
        result[name] = {"crops": crops[name], "seconds_all": seconds,
                        "crops_per_s": round(crops[name] / min(seconds), 1)}
    return result


def _udf_pass(root: Path, output: Path, profiler=None,
              image_format: str = "jpeg") -> tuple[int, float]:
    """Pairing, then every planned unit through ``crop_units``, in this process (the job's own
    ``crop_in_process``); ``(crops, seconds)``."""
    from jobs import steps
    from jobs.pipeline import JobConfig, crop_in_process, prepare

    shutil.rmtree(output, ignore_errors=True)
    config = JobConfig(images=str(root / "images"), detections=str(root / "detections"),
                       output=str(output), step=steps.parse_step(DYNAMIC_STEP),
                       image_format=image_format,
                       quality=JPEG_QUALITY if image_format == "jpeg" else None)
    prepared = prepare(config)
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    markers = crop_in_process(prepared)
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - started
    crops = sum(marker["counts"].get("crops", 0) for marker in markers)
    shutil.rmtree(output, ignore_errors=True)
    return crops, seconds


# -- the codec floor -------------------------------------------------------------------------------
_FLOOR_WINDOWS: dict = {}
_FLOOR_BUFFER: list = [None]  # the libjpeg-turbo floor's decode buffer, reused
FLOORS = {"floor": "opencv", "turbo_floor": "libjpeg-turbo"}  # results key -> decoder
FLOOR_DECODERS = tuple(FLOORS.values())


def codec_floor(root: Path, processes: int, decoder: str = "opencv") -> dict:
    """The least work any crop job must do: decode each image that has a crop once and encode
    each crop once (``cv2.imencode`` JPEG q90), one process per CPU, no Ray. ``decoder`` is
    ``"opencv"`` (``cv2.imdecode``: the floor of issue 14's target) or ``"libjpeg-turbo"``
    (simplejpeg into a buffer each process reuses, the decode the job uses: the same pixels,
    the lowest cost known for them). Windows come from the detections table (rounded half to
    even, clamped, empty ones skipped); images are read row group by row group. Process
    start-up is not timed."""
    import multiprocessing

    if decoder not in FLOOR_DECODERS:
        raise ValueError(f"decoder must be one of {FLOOR_DECODERS}, got {decoder!r}")
    windows = _windows_by_image(root)
    units = [(str(root / "images" / "part-00000.parquet"), group, decoder)
             for group in range(_row_groups(root))]
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, initializer=_floor_init, initargs=(windows,)) as pool:
        pool.map(_floor_ready, range(processes))
        load = _load()
        cpu_before, machine_before = cpu_snapshot(), machine_busy_seconds()
        started = time.perf_counter()
        done = pool.map(_floor_unit, units, chunksize=1)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds_since(cpu_before)
        foreign = foreign_cpu_seconds(machine_before, cpu)
    return {"crops": sum(c for c, _ in done), "images_decoded": sum(i for _, i in done),
            "seconds": round(seconds, 3), "processes": processes, "decoder": decoder,
            "load_start": load, "cpu_seconds": cpu, "foreign_cpu_seconds": foreign}


def _row_groups(root: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(root / "images" / "part-00000.parquet").metadata.num_row_groups


def _windows_by_image(root: Path) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    from cropcore.windows import empty_windows, windows_from_xyxy

    table = pq.read_table(root / "detections",
                          columns=["image_id", "x_min", "y_min", "x_max", "y_max"])
    ids = table.column("image_id").to_numpy(zero_copy_only=False)
    xyxy = np.stack([table.column(c).to_numpy() for c in ("x_min", "y_min", "x_max", "y_max")],
                    axis=1)
    sizes = _image_sizes(root)
    out: dict = {}
    for image_id in np.unique(ids):
        boxes = xyxy[ids == image_id]
        windows = windows_from_xyxy(boxes, sizes[image_id])
        windows = windows[~empty_windows(windows)]
        if len(windows):
            out[str(image_id)] = windows
    return out


def _image_sizes(root: Path) -> dict:
    import pyarrow.parquet as pq

    from cropcore.codec import read_image_size

    table = pq.read_table(root / "images", columns=["image_id", "image"])
    return {i: read_image_size(b) for i, b in zip(table.column("image_id").to_pylist(),
                                                  table.column("image").to_pylist(), strict=True)}


def _floor_init(windows: dict) -> None:
    import cv2
    import numpy  # noqa: F401 - imported before the clock starts
    import pyarrow.parquet  # noqa: F401
    import simplejpeg  # noqa: F401

    cv2.setNumThreads(1)
    _FLOOR_WINDOWS.clear()
    _FLOOR_WINDOWS.update(windows)


def _floor_ready(_: int) -> int:
    time.sleep(0.2)  # make sure every process of the pool has started
    return os.getpid()


def _floor_unit(unit: tuple[str, int, str]) -> tuple[int, int]:
    import cv2
    import numpy as np
    import pyarrow.parquet as pq
    import simplejpeg

    path, group, decoder = unit
    rows = pq.ParquetFile(path).read_row_group(group, columns=["image_id", "image"])
    crops = decoded = 0
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    for image_id, data in zip(rows.column("image_id").to_pylist(),
                              rows.column("image").to_pylist(), strict=True):
        windows = _FLOOR_WINDOWS.get(image_id)
        if windows is None:
            continue
        if decoder == "opencv":
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        else:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            size = width * height * 3
            if _FLOOR_BUFFER[0] is None or _FLOOR_BUFFER[0].size < size:
                _FLOOR_BUFFER[0] = np.empty(size, np.uint8)
            pixels = simplejpeg.decode_jpeg(data, "BGR", buffer=_FLOOR_BUFFER[0][:size])
        decoded += 1
        for x0, y0, x1, y1 in windows.tolist():
            ok, _ = cv2.imencode(".jpg", pixels[y0:y1, x0:x1], params)
            crops += int(ok)
    return crops, decoded


# -- the first-try Ray Data pipeline ---------------------------------------------------------------
def first_try_pipeline(images_url: str, detections_url: str, output_url: str,
                       background_rgb: tuple[int, int, int] = (0, 0, 0),
                       blocks: int | None = None) -> None:
    """The dynamic crop as a Ray Data user writes it first: read the detections into a dict
    keyed by image id, ``flat_map`` over image rows, PIL to decode and encode, pycocotools for
    the masks, a Python loop over each image's detections, ``write_parquet``. With ``blocks``,
    the images are repartitioned into that many blocks first (the usual fix when one task does
    all the work)."""
    import pandas as pd
    import ray

    detections = pd.read_parquet(detections_url)
    by_image = {image_id: group.to_dict("records")
                for image_id, group in detections.groupby("image_id")}
    images = ray.data.read_parquet(images_url)
    if blocks:
        images = images.repartition(blocks)
    crops = images.flat_map(_first_try_crops,
                            fn_kwargs={"by_image": by_image, "background": background_rgb})
    crops.write_parquet(output_url)


def _first_try_crops(row: dict, by_image: dict, background) -> list[dict]:
    import io

    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    image = Image.open(io.BytesIO(row["image"])).convert("RGB")
    width, height = image.size
    out = []
    for detection in by_image.get(row["image_id"], []):
        x0 = min(max(round(detection["x_min"]), 0), width)
        y0 = min(max(round(detection["y_min"]), 0), height)
        x1 = min(max(round(detection["x_max"]), 0), width)
        y1 = min(max(round(detection["y_max"]), 0), height)
        if x1 <= x0 or y1 <= y0:
            continue
        crop = image.crop((x0, y0, x1, y1))
        crop_mask = None
        if detection["mask"] is not None:
            rle = {"size": list(detection["mask"]["size"]),
                   "counts": detection["mask"]["counts"]}
            window = mask_utils.decode(rle)[y0:y1, x0:x1].astype(bool)
            pixels = np.array(crop)
            pixels[~window] = background
            crop = Image.fromarray(pixels)
            encoded = mask_utils.encode(np.asfortranarray(window.astype(np.uint8)))
            crop_mask = encoded["counts"].decode()
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        out.append({"crop_id": f"{row['image_id']}/{detection['detection_id']}",
                    "image_id": row["image_id"], "detection_id": detection["detection_id"],
                    "crop": buffer.getvalue(), "width": x1 - x0, "height": y1 - y0,
                    "x_min": detection["x_min"] - x0, "y_min": detection["y_min"] - y0,
                    "x_max": detection["x_max"] - x0, "y_max": detection["y_max"] - y0,
                    "class_name": detection["class_name"], "mask_counts": crop_mask})
    return out


def naive_session(spec: dict) -> dict:
    """Child process: the first-try pipeline on a fresh local Ray, warm-up then timed runs."""
    import ray

    from jobs import raycompat

    raycompat.init(num_cpus=spec["num_cpus"])
    raycompat.configure_progress(False)
    try:
        scratch = Path(spec["scratch"])
        blocks = spec.get("blocks")
        _naive_run(Path(spec["warmup"]), scratch / "naive-warmup", blocks)
        runs = [_fastest([_naive_run(Path(r["root"]), scratch / f"naive-{r['images']}", blocks)
                          for _ in range(spec.get("repeats", 1))]) | {"images": r["images"]}
                for r in spec["runs"]]
        return {"num_cpus": spec["num_cpus"], "blocks": blocks, "runs": runs}
    finally:
        ray.shutdown()


def _naive_run(root: Path, output: Path, blocks: int | None) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    load = _load()
    cpu_before, machine_before = cpu_snapshot(), machine_busy_seconds()
    started = time.perf_counter()
    first_try_pipeline(str(root / "images"), str(root / "detections"), str(output),
                       blocks=blocks)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds_since(cpu_before)
    foreign = foreign_cpu_seconds(machine_before, cpu)
    crops = _parquet_rows(output)
    shutil.rmtree(output, ignore_errors=True)
    return {"crops": crops, "seconds": round(seconds, 3), "load_start": load,
            "cpu_seconds": cpu, "foreign_cpu_seconds": foreign}


def _parquet_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(folder.rglob("*.parquet")))


# -- Daft ------------------------------------------------------------------------------------------
def daft_benchmark(daft_python: Path, roots: list[Path], workdir: Path, morsel: int) -> dict:
    """Daft on the same inputs, in its own venv, one subprocess per dataset size (each timed
    from the first read to the last write, import excluded). Masks are not applied: Daft has
    no mask operation, and its JPEG encoder has no quality setting (q75)."""
    if not daft_python.exists():
        return {"unavailable": f"no Daft venv at {daft_python}; create it with: {DAFT_SETUP}"}
    script = DAFT_JOB
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    runs = []
    for root in roots:
        output = workdir / "scratch" / f"daft-{root.name}"
        result_path = workdir / "logs" / f"daft-{root.name}.result.json"
        log_path = workdir / "logs" / f"daft-{root.name}.log"
        shutil.rmtree(output, ignore_errors=True)
        result_path.unlink(missing_ok=True)
        load = _load()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(CHILD_ENV)
        peak = PeakOfChild()
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [str(daft_python), str(script), str(root / "images"), str(root / "detections"),
                 str(output), str(result_path), str(morsel)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
            code = peak.watch(process)
        shutil.rmtree(output, ignore_errors=True)
        if not result_path.exists():
            reason = f"the Daft script exited with {code}: {_tail(log_path)}"
            return {"unavailable": reason, "runs": runs}
        result = json.loads(result_path.read_text())
        runs.append(result | {"images": int(root.name.rsplit("-", 1)[1]), "load_start": load,
                              "memory": {"peak_rss": peak.peak_rss}})
    return rates(runs) | {"morsel_size": morsel}


# -- targets and the report ------------------------------------------------------------------------
def evaluate_targets(results: dict) -> list[dict]:
    """Each target with its measured ratio and pass/fail (None when it could not be measured)."""
    targets = []

    def add(name, value, threshold, detail, higher_is_better=True, unit="x"):
        passed = None if value is None else (value >= threshold if higher_is_better
                                             else value <= threshold)
        targets.append({"target": name, "value": None if value is None else round(value, 3),
                        "threshold": threshold, "pass": passed, "detail": detail,
                        "unit": unit})

    for threads, kernels in sorted(results.get("kernels", {}).items()):
        uint8 = kernels.get("crop_and_resize", {})
        for name, car in (("crop_and_resize", uint8),
                          ("crop_and_resize f32", uint8.get("float32"))):
            if car is None:
                continue
            tf = car.get("tensorflow", {})
            for key, variant in (("cropcore", "new output"), ("cropcore_out", "out=")):
                ours = car.get(key, {})
                ratio = (tf["min_ms"] / ours["min_ms"]) if "min_ms" in tf and "min_ms" in ours \
                    else None
                add(f"{name} vs TF, {threads} thread(s), {variant}", ratio, 5.0, ">= 5x")
    for label, part in results.get("pipeline", {}).items():
        job = part.get("job", {})
        rate = {c: _trusted(v) for c, v in job.items()}
        for cpus, floor in sorted(part.get("floor", {}).items()):
            add(f"{label}: job vs codec floor, {cpus} CPU(s)",
                _ratio(rate.get(cpus), _trusted(floor)), 1.0, ">= 1.0x")
        for cpus, entry in sorted(job.items()):
            fixed = fixed_seconds(entry)
            if fixed is not None:
                add(f"{label}: job fixed cost per run, {cpus} CPU(s)", fixed, 1.5,
                    "<= 1.5 s", higher_is_better=False, unit=" s")
        png = part.get("png", {})
        if "fpng" in png and "opencv" in png:
            add(f"{label}: PNG crop UDF, fpng vs OpenCV writer", _ratio(
                png["fpng"]["crops_per_s"], png["opencv"]["crops_per_s"]), 3.0, ">= 3x")
        top = max(rate, key=int) if rate else None
        if top is None:
            continue
        if "naive" in part:
            best = max((r for r in map(_trusted, part["naive"].values()) if r), default=None)
            add(f"{label}: job ({top} CPUs) vs first-try Ray Data (best)",
                _ratio(rate.get(top), best), 5.0, ">= 5x")
        if "daft" in part:
            add(f"{label}: job ({top} CPUs) vs Daft (2 cores)",
                _ratio(rate.get(top), _trusted(part["daft"])), 30.0, ">= 30x")
        if "1" in rate and "2" in rate:
            add(f"{label}: job scaling 1 -> 2 CPUs", _ratio(rate["2"], rate["1"]), 1.7, ">= 1.7x")
        top_runs = job.get(top, {}).get("runs", []) if top else []
        if len(top_runs) == 2 and all("memory" in r for r in top_runs):
            small, large = (r["memory"]["peak_pss_driver_workers"] for r in top_runs)
            factor = top_runs[1]["images"] / top_runs[0]["images"]
            add(f"{label}: peak PSS at {factor:g}x data vs 1x ({top} CPUs)",
                large / small if small else None, 1.10, "<= 1.10x", higher_is_better=False)
    return targets


def fixed_seconds(entry: dict) -> float | None:
    """A run's fixed cost: the smaller run's seconds minus its crops at the marginal rate (what
    the run spent apart from cropping; Ray's start is outside the timed run)."""
    rate, runs = _trusted(entry), entry.get("runs") or []
    if not rate or not runs or "seconds" not in runs[0]:
        return None
    return runs[0]["seconds"] - runs[0]["crops"] / rate


def _trusted(entry: dict) -> float | None:
    """An entry's marginal rate, unless it failed or is suspect (see ``rates``)."""
    if not entry or entry.get("suspect") or "error" in entry or "unavailable" in entry:
        return None
    return entry.get("marginal_crops_per_s")


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def format_report(results: dict) -> str:
    """The results as a plain-text table."""
    machine = results["machine"]
    lines = [f"cropcore bench ({results['mode']}): {machine['cpu_model']}, {machine['cpus']} CPUs,"
             f" {machine['memory_gib']} GiB; Python {machine['python']}, Ray {machine['ray']}",
             f"load average (1, 5, 15 min): start {results['load']['start']}, "
             f"end {results['load']['end']}", ""]
    if results.get("kernels"):
        lines += _format_kernels(results["kernels"])
    for label, part in results.get("pipeline", {}).items():
        lines += _format_pipeline(label, part)
    if "CPU-s elsewhere]" in "\n".join(lines):
        lines += ["[+X CPU-s elsewhere]: CPU time the machine spent outside the run's process tree"
                  " during the run: other people's load, or Ray", "  workers that started and"
                  " exited within the run (the first-try pipeline starts extra workers)", ""]
    if '(!)' in "\n".join(lines):
        lines += ["(!) marginal rate over twice the larger run's average: the smaller run stalled;"
                  " not used for targets; rerun", ""]
    lines += ["targets", f"  {'target':<52} {'value':>8}  {'wanted':<9} result"]
    for t in results.get("targets", []):
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}{t.get('unit', 'x')}"
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        lines.append(f"  {t['target']:<52} {value:>8}  {t['detail']:<9} {verdict}")
    return "\n".join(lines)


def _ms(entry: dict) -> str:
    if "min_ms" in entry:
        return f"{entry['min_ms']:.1f} ms (median {entry['median_ms']:.1f})"
    return f"unavailable ({entry.get('error', 'not run')})"


def _format_kernels(kernels: dict) -> list[str]:
    lines = ["kernels: best of the timed calls after one warm-up call (median in brackets);"
             " ratios of the bests",
             "  crop_and_resize: 1x1080x1920x3 uint8, 256 boxes of 64-600 px -> 224x224 bilinear",
             f"  {'threads':<8} {'cropcore':>17} {'tf.image':>18} {'cv2 warpAffine loop':>20} "
             f"{'TF/ours':>8} {'cv2/ours':>9} {'cropcore, out=':>17} {'TF/ours':>8}"]

    def cell(entry: dict) -> str:
        if "min_ms" not in entry:
            return "unavailable"
        return f"{entry['min_ms']:.1f} ({entry['median_ms']:.1f}) ms"

    for threads, k in sorted(kernels.items()):
        if "error" in k:
            lines.append(f"  {threads:<8} unavailable ({k['error']})")
            continue
        car = k["crop_and_resize"]
        ours, tf, cv = car["cropcore"], car.get("tensorflow", {}), car["cv2_warp_affine"]
        tf_ratio = f"{tf['min_ms'] / ours['min_ms']:.2f}x" if "min_ms" in tf else "n/a"
        reused = car.get("cropcore_out", {})
        tf_reused = (f"{tf['min_ms'] / reused['min_ms']:.2f}x"
                     if "min_ms" in tf and "min_ms" in reused else "n/a")
        lines.append(f"  {threads:<8} {cell(ours):>17} {cell(tf):>18} {cell(cv):>20} "
                     f"{tf_ratio:>8} {cv['min_ms'] / ours['min_ms']:>8.2f}x "
                     f"{cell(reused):>17} {tf_reused:>8}")
    for threads, k in sorted(kernels.items()):
        f32 = k.get("crop_and_resize", {}).get("float32")
        if not f32:
            continue
        tf = f32.get("tensorflow", {})
        ratios = " / ".join(f"{tf['min_ms'] / f32[key]['min_ms']:.2f}x" if "min_ms" in tf
                            else "n/a" for key in ("cropcore", "cropcore_out"))
        lines.append(f"  float32 image, {threads} thread(s): cropcore {_ms(f32['cropcore'])}, "
                     f"out= {_ms(f32['cropcore_out'])}, TF {_ms(tf)} -> TF/ours {ratios}; "
                     f"bit-exact {f32.get('cropcore_bit_exact_with_tf', 'n/a')}")
    first = kernels[min(kernels)]
    if "crop_and_resize" in first:
        car = first["crop_and_resize"]
        if "cropcore_bit_exact_with_tf" in car:
            lines.append(f"  cropcore bit-exact with TF: {car['cropcore_bit_exact_with_tf']}; "
                         f"cv2 (uint8 out) max |diff| vs TF: {car['cv2_max_abs_diff_vs_tf']:.1f}")
        if "error" in car.get("tensorflow", {}):
            lines.append(f"  tf: unavailable ({car['tensorflow']['error']})")
    lines.append("  dynamic_crop: 1920x1080, detections with full-frame masks, opacity 1.0")
    for threads, k in sorted(kernels.items()):
        if "dynamic_crop" not in k:
            continue
        d = k["dynamic_crop"]
        ratio = d["reference_loop"]["min_ms"] / d["cropcore"]["min_ms"]
        lines.append(f"  {threads} thread(s): cropcore.dynamic_crop {_ms(d['cropcore'])}, "
                     f"reference loop {_ms(d['reference_loop'])} -> {ratio:.2f}x "
                     f"({d['detections']} detections; same pixels: {d['same_pixels']})")
    return lines + [""]


def _format_pipeline(label: str, part: dict) -> list[str]:
    lines = [f"pipeline {label}: crops/s, marginal between the two dataset sizes",
             f"  {'system':<48} {'CPUs':>4} {'crops/s':>9}  runs (images: crops in seconds)"]

    def row(name: str, cpus, entry: dict) -> None:
        if "unavailable" in entry and not entry.get("runs"):
            lines.append(f"  {name:<48} {cpus:>4} unavailable ({entry['unavailable']})")
            return
        if "unavailable" in entry or "error" in entry:
            reason = entry.get("unavailable") or entry.get("error")
            lines.append(f"  {name:<48} {cpus:>4} unavailable ({reason})")
            return
        rate = entry.get("marginal_crops_per_s")
        runs = "; ".join(f"{r['images']}: {r['crops']} in {r['seconds']:.2f} s"
                         + (f" [+{r['foreign_cpu_seconds']:.1f} CPU-s elsewhere]"
                            if r.get("foreign_cpu_seconds", 0) >= 0.2 else "")
                         for r in entry["runs"])
        rate_text = f"{rate:,.0f}" if rate else "n/a"
        if entry.get("suspect"):
            rate_text += "(!)"
        lines.append(f"  {name:<48} {cpus:>4} {rate_text:>9}  {runs}")

    for cpus, entry in sorted(part.get("floor", {}).items()):
        row("codec floor (cv2 decode + encode, processes)", cpus, entry)
    for cpus, entry in sorted(part.get("turbo_floor", {}).items()):
        row("  the same, libjpeg-turbo decode (simplejpeg)", cpus, entry)
    for cpus, entry in sorted(part.get("job", {}).items()):
        row("cropcore job (Ray Data, masks, JPEG q90)", cpus, entry)
    ratios = [f"{cpus} CPU(s) {ratio:.2f}x" for cpus, entry in sorted(part.get("job", {}).items())
              if (ratio := _ratio(_trusted(entry),
                                  _trusted(part.get("turbo_floor", {}).get(cpus, {}))))]
    if ratios:
        lines.append(f"  job vs the libjpeg-turbo floor: {', '.join(ratios)}")
    names = {"as_written": "first-try Ray Data (flat_map, PIL, masks)",
             "repartitioned": "  the same + repartition(4)"}
    for variant, entry in part.get("naive", {}).items():
        row(names.get(variant, variant), NAIVE_CPUS, entry)
    if "daft" in part:
        if "unavailable" in part["daft"]:
            lines.append(f"  daft: unavailable ({part['daft']['unavailable']})")
        else:
            row("Daft 0.7.26 (join, decode, crop; no masks, q75)", 2, part["daft"])
    memory = []
    for cpus, entry in sorted(part.get("job", {}).items()):
        for r in entry.get("runs", []):
            if "memory" in r:
                m = r["memory"]
                memory.append(f"  job {cpus} CPU(s), {r['images']} images: peak PSS driver+workers "
                              f"{m['peak_pss_driver_workers'] / 2**30:.2f} GiB, all Ray processes "
                              f"{m['peak_pss'] / 2**30:.2f} GiB (RSS sum "
                              f"{m['peak_rss'] / 2**30:.2f} GiB)")
    if memory:
        lines += ["  memory:", *memory]
    cpu_lines = []
    entries = [(f"job {c} CPU(s)", e) for c, e in sorted(part.get("job", {}).items())]
    entries += [(f"first-try {v}", e) for v, e in part.get("naive", {}).items()]
    for name, entry in entries:
        runs = [r for r in entry.get("runs", []) if "cpu_seconds" in r]
        if len(runs) == 2:
            used = {k: runs[1]["cpu_seconds"].get(k, 0) - runs[0]["cpu_seconds"].get(k, 0)
                    for k in runs[1]["cpu_seconds"]}
            crops = runs[1]["crops"] - runs[0]["crops"]
            total = sum(used.values())
            seconds = runs[1]["seconds"] - runs[0]["seconds"]
            spread = ", ".join(f"{k} {v:.1f}" for k, v in used.items())
            cpu_lines.append(f"  {name}: {total:.1f} CPU-s for {crops} more crops in "
                             f"{seconds:.1f} s ({total / seconds if seconds else 0:.2f} cores "
                             f"busy; {spread})")
    if cpu_lines:
        lines += ["  CPU time of the marginal work (larger run minus smaller run):", *cpu_lines]
    for cpus, entry in sorted(part.get("job", {}).items()):
        tasks = (entry.get("runs") or [{}])[-1].get("tasks")
        if tasks and tasks["tasks"]:
            gap = "n/a" if tasks["mean_gap_s"] is None else f"{tasks['mean_gap_s']:.3f} s"
            lines.append(f"  job {cpus} CPU(s), larger run: {tasks['tasks']} Ray tasks on "
                         f"{tasks['workers']} workers, {tasks['mean_task_s']:.3f} s each on "
                         f"average; idle gap between a worker's tasks {gap}")
    for cpus, entry in sorted(part.get("job", {}).items()):
        fixed = fixed_seconds(entry)
        if fixed is not None:
            lines.append(f"  job {cpus} CPU(s): fixed cost per run {fixed:.2f} s (the smaller "
                         f"run's seconds minus its crops at the marginal rate)")
    png = part.get("png")
    if png and "fpng" in png:
        lines.append(f"  PNG crops, crop UDF in-process, one core, no Ray ({png['images']} "
                     f"images): fpng {png['fpng']['crops_per_s']:,.0f} crops/s, OpenCV zlib 1 "
                     f"{png['opencv']['crops_per_s']:,.0f} crops/s")
    elif png:
        lines.append(f"  PNG crops: unavailable ({png.get('error')})")
    profile = part.get("profile")
    if profile and "groups_seconds" in profile:
        total = profile["profiled_seconds"]
        lines.append(f"  profile: jobs.udfs.crop_units in-process, one core, no Ray: "
                     f"{profile['crops']} crops in {profile['seconds']:.2f} s = "
                     f"{profile['crops_per_s']:,.0f} crops/s; under cProfile {total:.2f} s:")
        for group, seconds in profile["groups_seconds"].items():
            lines.append(f"    {group:<58} {seconds:7.3f} s {100 * seconds / total:5.1f}%")
    elif profile:
        lines.append(f"  profile: unavailable ({profile.get('error')})")
    return lines + [""]


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
