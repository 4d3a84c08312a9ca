"""The scale benchmark (issue 11): driver memory and time as the input grows, and pairing speed.

Synthetic inputs with one tiny real JPEG (8x8, shared by every image row), so the work measured
is planning, pairing and bookkeeping, not pixels: 256 images per images row group (64 row groups
per file), 20-27 detections per image, detections files of 16 row groups of 65,536 rows.

Every measurement runs in a fresh Python process (``--child``), so the driver's peak RSS
(``VmHWM`` of ``/proc/self/status``, and ``VmRSS`` sampled every 20 ms from a thread) is that of
one run, not of the benchmark's own data generation. Each child starts its own local Ray
(``jobs.raycompat.init``) and shuts it down.

    python -m benchmarks.scale                       # S=200k and 4S=800k detections, pairing
                                                     # 1 vs 2 CPUs, planning+pairing at 20M,
                                                     # driver bytes per unit and listed file
    python -m benchmarks.scale --big 5000000         # a smaller "big" figure
    python -m benchmarks.scale --parts job,pairing   # select parts (job, pairing, big, units)

Data goes to ``--root`` (default ``/tmp/cropcore-scale``) and is deleted at the end unless
``--keep-data``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["RssSampler", "main", "proc_status_bytes", "tiny_jpeg", "write_inputs"]

IMAGES_PER_GROUP = 256
GROUPS_PER_IMAGES_FILE = 64
DETECTIONS_PER_GROUP = 65_536
GROUPS_PER_DETECTIONS_FILE = 16
PER_IMAGE = (20, 27)  # detections per image, uniform, inclusive
STEP = {"type": "roboflow_core/dynamic_crop@v1", "mask_opacity": 0.0,
        "background_color": "#000000"}


# -- inputs -------------------------------------------------------------------------------------
def tiny_jpeg(size: int = 8) -> bytes:
    """A real ``size`` x ``size`` JPEG (a colour gradient, q90)."""
    import cv2
    import numpy as np

    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 128), axis=-1)
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(pixels, np.uint8),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def _ids(prefix: str, start: int, n: int, width: int):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers = pc.cast(pa.array(np.arange(start, start + n, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers, width, "0"), "")


def write_inputs(root: Path, num_detections: int, seed: int = 0) -> dict:
    """``root/images/*.parquet`` and ``root/detections/*.parquet`` with ``num_detections``
    detections (the last image may hold fewer than 20); written in chunks, so memory stays small.
    Returns the counts."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    blob = tiny_jpeg()
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "detections").mkdir(parents=True, exist_ok=True)
    images_per_file = IMAGES_PER_GROUP * GROUPS_PER_IMAGES_FILE
    rows_per_file = DETECTIONS_PER_GROUP * GROUPS_PER_DETECTIONS_FILE
    image_schema = pa.schema([("image_id", pa.string()), ("image", pa.binary())])
    det_schema = pa.schema([("image_id", pa.string()), ("detection_id", pa.string()),
                            ("x_min", pa.float64()), ("y_min", pa.float64()),
                            ("x_max", pa.float64()), ("y_max", pa.float64()),
                            ("class_name", pa.string()), ("class_id", pa.int64()),
                            ("confidence", pa.float64())])
    images = detections = 0
    det_writer = None
    det_in_file = det_files = 0
    pending: list[pa.Table] = []
    pending_rows = 0

    def flush(final: bool):
        nonlocal det_writer, det_in_file, det_files, pending, pending_rows
        table = pa.concat_tables(pending) if pending else det_schema.empty_table()
        offset = 0
        while table.num_rows - offset >= DETECTIONS_PER_GROUP or (final and offset
                                                                   < table.num_rows):
            if det_writer is None:
                det_writer = pq.ParquetWriter(root / "detections" / f"part-{det_files:05d}.parquet",
                                              det_schema)
            n = min(DETECTIONS_PER_GROUP, table.num_rows - offset, rows_per_file - det_in_file)
            det_writer.write_table(table.slice(offset, n), row_group_size=DETECTIONS_PER_GROUP)
            offset += n
            det_in_file += n
            if det_in_file >= rows_per_file:
                det_writer.close()
                det_writer, det_in_file, det_files = None, 0, det_files + 1
        rest = table.slice(offset)
        pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if final and det_writer is not None:
            det_writer.close()
            det_writer = None

    file_index = 0
    while detections < num_detections:
        counts = rng.integers(PER_IMAGE[0], PER_IMAGE[1] + 1, images_per_file)
        total = np.cumsum(counts)
        need = num_detections - detections
        if total[-1] > need:
            last = int(np.searchsorted(total, need))  # the image where the target is reached
            counts = counts[: last + 1].copy()
            counts[-1] -= int(counts.sum() - need)
        n_images, n_det = len(counts), int(counts.sum())
        image_ids = _ids("img-", images, n_images, 9)
        pq.write_table(pa.table({"image_id": image_ids,
                                 "image": pa.array([blob] * n_images, pa.binary())},
                                schema=image_schema),
                       root / "images" / f"part-{file_index:05d}.parquet",
                       row_group_size=IMAGES_PER_GROUP)
        owner = np.repeat(np.arange(n_images), counts)
        jitter = rng.uniform(0, 1, n_det)
        pending.append(pa.table({
            "image_id": image_ids.take(pa.array(owner)),
            "detection_id": _ids("det-", detections, n_det, 10),
            "x_min": pa.array(1.0 + jitter), "y_min": pa.array(1.0 + jitter),
            "x_max": pa.array(5.0 + jitter), "y_max": pa.array(6.0 + jitter),
            "class_name": pa.array(np.where(owner % 2 == 0, "car", "person")),
            "class_id": pa.array((owner % 2).astype(np.int64)),
            "confidence": pa.array(rng.uniform(0.3, 1.0, n_det)),
        }, schema=det_schema))
        pending_rows += n_det
        flush(final=False)
        images += n_images
        detections += n_det
        file_index += 1
    flush(final=True)
    return {"images": images, "detections": detections, "images_files": file_index,
            "detections_files": det_files + (1 if det_in_file else 0),
            "bytes": sum(p.stat().st_size for p in root.rglob("*.parquet"))}


# -- measuring in a child -----------------------------------------------------------------------
def proc_status_bytes(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


class RssSampler:
    """Peak ``VmRSS`` of this process, sampled from a thread every ``interval`` seconds."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self.peak = proc_status_bytes("VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, proc_status_bytes("VmRSS"))


def _child(spec: dict) -> dict:
    """One measurement in this (fresh) process; see ``main``."""
    # read by jobs.pairing when imported: 0 always shuffles, a huge value always takes one task
    os.environ["CROPJOB_PAIRING_SINGLE_TASK_ROWS"] = "1000000000000" if spec.get("single_task") \
        else "0"
    import ray

    from benchmarks.memory import cpu_seconds_since, cpu_snapshot
    from jobs import raycompat, steps
    from jobs.pipeline import JobConfig, prepare, run

    raycompat.init(num_cpus=spec["num_cpus"])
    raycompat.configure_progress(False)
    result: dict = {"kind": spec["kind"], "num_cpus": spec["num_cpus"],
                    "pairing_path": "single task" if spec.get("single_task") else "distributed"}
    try:
        if spec.get("warmup"):  # start the workers with a small input, then measure
            _pair_once(Path(spec["warmup"]), Path(spec["out"]) / "warmup", spec["num_cpus"])
        result["rss_before"] = proc_status_bytes("VmRSS")
        before = cpu_snapshot()
        root, out = Path(spec["data"]), Path(spec["out"]) / "run"
        with RssSampler() as sampler:
            started = time.perf_counter()
            if spec["kind"] == "job":
                config = JobConfig(images=str(root / "images"),
                                   detections=str(root / "detections"), output=str(out),
                                   step=steps.parse_step(STEP), image_format="jpeg", quality=90)
                prepared = prepare(config)
                result["plan_seconds"] = round(time.perf_counter() - started, 2)
                summary = run(prepared)
                result["seconds"] = round(time.perf_counter() - started, 2)
                result["summary"] = {k: getattr(summary, k) for k in
                                     ("images", "detections", "crops", "shards", "errors")}
                result["manifest_bytes"] = (out / "_manifest.json").stat().st_size
                result["work_left"] = (out / "_work").exists()
            else:
                timings = _pair_once(root, out, spec["num_cpus"])
                result.update(timings)
                result["seconds"] = round(time.perf_counter() - started, 2)
        result["cpu_seconds"] = cpu_seconds_since(before)
        if spec.get("profile"):
            result["timeline"] = _timeline_summary()
        result["rss_peak_sampled"] = sampler.peak
        result["vm_hwm"] = proc_status_bytes("VmHWM")
        result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        ray.shutdown()
    return result


def _timeline_summary() -> dict:
    """Ray tasks of the run by name (``ray.timeline()``): count, summed and longest seconds."""
    import ray

    tasks: dict[str, list[float]] = {}
    for event in ray.timeline():
        if event.get("ph") == "X" and "dur" in event:
            tasks.setdefault(event["name"], []).append(event["dur"] / 1e6)
    return {name: {"count": len(d), "seconds": round(sum(d), 2), "max": round(max(d), 3)}
            for name, d in sorted(tasks.items(), key=lambda kv: -sum(kv[1]))[:25]}


def _pair_once(root: Path, out: Path, num_cpus: int) -> dict:
    """``make_plan`` then ``pairing.pair`` into ``out`` (its work area); the seconds of each."""
    from jobs import pairing
    from jobs.plan import make_plan
    from jobs.storage import resolve

    started = time.perf_counter()
    plan = make_plan(str(root / "images"), str(root / "detections"), needs_detections=True,
                     keep_columns=None, parameter_columns={})
    planned = time.perf_counter()
    output = resolve(str(out))
    fingerprint = "0" * 64
    work = output.child("_work", fingerprint[:16])
    paired = pairing.pair(plan, output, work, fingerprint, num_cpus)
    done = time.perf_counter()
    return {"plan_seconds": round(planned - started, 2), "pair_seconds": round(done - planned, 2),
            "units": len(plan.units), "detection_parts": len(plan.detection_parts),
            "detections": plan.num_detections, "images": plan.num_images,
            "staged_units": len(paired.staged_units), "error_shards": len(paired.markers),
            "paired_json_bytes": (Path(out) / "_work" / fingerprint[:16]
                                  / pairing.PAIRED).stat().st_size,
            "pairs_per_second": round(plan.num_detections / max(done - planned, 1e-9))}


def _in_process_passes(root: Path, out: Path) -> dict:
    """The pairing passes without Ray, in this process (``pairing.pair_in_process``): the cost of
    the vectorized work alone, against which the Ray Data path's overheads are read."""
    from jobs import pairing
    from jobs.plan import make_plan
    from jobs.storage import resolve

    plan = make_plan(str(root / "images"), str(root / "detections"), needs_detections=True,
                     keep_columns=None, parameter_columns={})
    output = resolve(str(out))
    work = output.child("_work", "0" * 16)
    started = time.perf_counter()
    pairing.pair_in_process(plan, output, work, "0" * 64)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "detections": plan.num_detections,
            "pairs_per_second": round(plan.num_detections / seconds),
            "vm_hwm": proc_status_bytes("VmHWM")}


def write_many_units(root: Path, units: int) -> None:
    """An images file of ``units`` one-image row groups and one detection per image: a plan
    with many units at a small input, to measure the driver's cost per unit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "detections").mkdir(parents=True, exist_ok=True)
    ids = _ids("img-", 0, units, 9)
    pq.write_table(pa.table({"image_id": ids, "image": pa.array([tiny_jpeg()] * units)}),
                   root / "images" / "part-00000.parquet", row_group_size=1)
    pq.write_table(pa.table({"image_id": ids, "detection_id": _ids("det-", 0, units, 10),
                             **{c: pa.array([1.0 if c < "x_max" else 5.0] * units)
                                for c in ("x_min", "y_min", "x_max", "y_max")}}),
                   root / "detections" / "part-00000.parquet")


def _units_child(spec: dict) -> dict:
    """Driver memory per unit: RSS after ``make_plan`` of a many-unit input, and after the crop
    stage's input dataset (``ray.data.from_items`` of one block per unit, as
    ``jobs.pipeline.build_pipeline`` makes it)."""
    import gc
    from dataclasses import asdict

    import ray

    from jobs import raycompat
    from jobs.plan import make_plan

    raycompat.init(num_cpus=spec["num_cpus"])
    try:
        root = Path(spec["data"])
        gc.collect()
        base = proc_status_bytes("VmRSS")
        started = time.perf_counter()
        plan = make_plan(str(root / "images"), str(root / "detections"), needs_detections=True,
                         keep_columns=None, parameter_columns={})
        plan_seconds = time.perf_counter() - started
        gc.collect()
        after_plan = proc_status_bytes("VmRSS")
        started = time.perf_counter()
        rows = [asdict(u) for u in plan.units]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
        items_seconds = time.perf_counter() - started
        gc.collect()
        after_items = proc_status_bytes("VmRSS")
        n = len(plan.units)
        result = {"kind": "units", "units": n, "plan_seconds": round(plan_seconds, 2),
                  "from_items_seconds": round(items_seconds, 2),
                  "plan_bytes_per_unit": round((after_plan - base) / n),
                  "from_items_bytes_per_unit": round((after_items - after_plan) / n),
                  "vm_hwm": proc_status_bytes("VmHWM"), "rss_before": base}
        del dataset, rows, plan
        # the output listing that jobs.ownership.inspect_output and remove_own_leftovers make
        from jobs.storage import list_tree, resolve

        listing = Path(spec["out"]) / "listing"
        for kind in ("crops", "lineage", "_markers"):
            (listing / kind).mkdir(parents=True, exist_ok=True)
        files = spec["files"]
        for i in range(files):
            kind = ("crops", "lineage", "_markers")[i % 3]
            (listing / kind / f"part-{i:024x}.parquet").touch()
        gc.collect()
        before = proc_status_bytes("VmRSS")
        started = time.perf_counter()
        names = list_tree(resolve(str(listing)))
        result["list_tree_seconds"] = round(time.perf_counter() - started, 2)
        result["list_tree_files"] = len(names)
        result["list_tree_bytes_per_file"] = round((proc_status_bytes("VmRSS") - before) / files)
        result["list_tree_peak_bytes_per_file"] = round(
            (proc_status_bytes("VmHWM") - before) / files) if proc_status_bytes("VmHWM") > \
            before else 0
        shutil.rmtree(listing, ignore_errors=True)
        return result
    finally:
        ray.shutdown()


def _run_child(spec: dict) -> dict:
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="disabled",
               RAY_USAGE_STATS_ENABLED="0")
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--child",
                              json.dumps(spec)], env=env, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
    lines = [x for x in process.stdout.splitlines() if x.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"child {spec} failed ({process.returncode}):\n"
                           f"{process.stderr[-4000:]}")
    result = json.loads(lines[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 2)
    shutil.rmtree(spec["out"], ignore_errors=True)
    return result


# -- the run ------------------------------------------------------------------------------------
def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", default="/tmp/cropcore-scale")
    parser.add_argument("--sizes", default="200000,800000",
                        help="S,4S detections for the whole-job runs")
    parser.add_argument("--pairing-size", type=int, default=2_000_000,
                        help="detections for the 1 vs 2 CPU pairing throughput")
    parser.add_argument("--big", type=int, default=20_000_000,
                        help="detections for the planning + pairing figure")
    parser.add_argument("--parts", default="job,pairing,big,units")
    parser.add_argument("--units", type=int, default=50_000,
                        help="row groups (units) of the driver-cost-per-unit measurement")
    parser.add_argument("--listing-files", type=int, default=100_000,
                        help="files in the output listing measurement (jobs.storage.list_tree)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="pairing runs per CPU count (the best is kept)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="pairing runs: summarize Ray's task timeline")
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        if spec["kind"] == "units":
            result = _units_child(spec)
        elif spec["kind"] == "passes":
            result = _in_process_passes(Path(spec["data"]), Path(spec["out"]) / "run")
        else:
            result = _child(spec)
        print(json.dumps(result))
        return 0

    root = Path(args.root)
    parts = set(args.parts.split(","))
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    data: dict[int, Path] = {}

    def dataset(n: int) -> Path:
        if n not in data:
            path = root / f"data-{n}"
            shutil.rmtree(path, ignore_errors=True)
            started = time.perf_counter()
            counts = write_inputs(path, n)
            print(f"inputs: {n:,} detections: {counts} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
            results.setdefault("inputs", {})[str(n)] = counts
            data[n] = path
        return data[n]

    def drop(n: int) -> None:
        if not args.keep_data and n in data:
            shutil.rmtree(data.pop(n), ignore_errors=True)

    try:
        if "job" in parts:
            small, large = (int(x) for x in args.sizes.split(","))
            rows = []
            for single in (False, True):
                for n in (small, large):
                    r = _run_child({"kind": "job", "data": str(dataset(n)), "num_cpus": 2,
                                    "single_task": single, "out": str(root / "out")})
                    r["size"] = n
                    rows.append(r)
                    print(f"job {n:>9,} det, {r['pairing_path']:>11}: {r['seconds']:7.1f} s, "
                          f"driver peak RSS {_mb(r['vm_hwm'])} "
                          f"(sampled {_mb(r['rss_peak_sampled'])}, "
                          f"before run {_mb(r['rss_before'])}), manifest "
                          f"{r['manifest_bytes']:,} B", flush=True)
            results["job"] = rows
            for path in ("distributed", "single task"):
                a, b = [r for r in rows if r["pairing_path"] == path]
                results.setdefault("job_ratios", {})[path] = {
                    "rss_ratio": round(b["vm_hwm"] / a["vm_hwm"], 3),
                    "rss_growth_over_base_mb": [round((r["vm_hwm"] - r["rss_before"]) / 2**20)
                                                for r in (a, b)],
                    "seconds_ratio": round(b["seconds"] / a["seconds"], 2)}
                print(f"  {path}: peak RSS 4S/S = {b['vm_hwm'] / a['vm_hwm']:.3f}x, "
                      f"wall 4S/S = {b['seconds'] / a['seconds']:.2f}x", flush=True)
            drop(small)
            drop(large)
        if "pairing" in parts:
            warm = dataset(20_000)
            n = args.pairing_size
            rows = []
            passes = _run_child({"kind": "passes", "data": str(dataset(n)),
                                 "out": str(root / "out")})
            print(f"passes in process, no Ray, 1 core: {passes['seconds']} s, "
                  f"{passes['pairs_per_second']:,}/s", flush=True)
            for cpus in (1, 2) * args.repeats:
                r = _run_child({"kind": "pair", "data": str(dataset(n)), "num_cpus": cpus,
                                "warmup": str(warm), "out": str(root / "out"),
                                "profile": args.profile})
                rows.append(r)
                print(f"pair {n:,} det, {cpus} CPU: {r['pair_seconds']} s, "
                      f"{r['pairs_per_second']:,} det/s, cpu {r['cpu_seconds']}, "
                      f"load {r['load_after']}", flush=True)
            best = {c: max(r["pairs_per_second"] for r in rows if r["num_cpus"] == c)
                    for c in (1, 2)}
            results["pairing"] = {"runs": rows, "in_process": passes, "best": best,
                                  "ratio": round(best[2] / best[1], 2)}
            print(f"  pairing 2 CPU / 1 CPU = {best[2] / best[1]:.2f}x", flush=True)
            drop(n)
            drop(20_000)
        if "big" in parts:
            n = args.big
            r = _run_child({"kind": "pair", "data": str(dataset(n)), "num_cpus": 2,
                            "out": str(root / "out")})
            results["big"] = r
            print(f"plan+pair {n:,} det: plan {r['plan_seconds']} s, pair {r['pair_seconds']} s "
                  f"({r['pairs_per_second']:,}/s), driver peak RSS {_mb(r['vm_hwm'])} "
                  f"(before {_mb(r['rss_before'])}), _paired.json {r['paired_json_bytes']:,} B",
                  flush=True)
            drop(n)
        if "units" in parts:
            path = root / f"units-{args.units}"
            shutil.rmtree(path, ignore_errors=True)
            write_many_units(path, args.units)
            r = _run_child({"kind": "units", "data": str(path), "num_cpus": 2,
                            "out": str(root / "out"), "files": args.listing_files})
            results["units"] = r
            print(f"{r['units']:,} units: make_plan {r['plan_seconds']} s, "
                  f"{r['plan_bytes_per_unit']:,} B/unit; from_items (one block per unit) "
                  f"{r['from_items_seconds']} s, {r['from_items_bytes_per_unit']:,} B/unit; "
                  f"list_tree of {r['list_tree_files']:,} files {r['list_tree_seconds']} s, "
                  f"{r['list_tree_bytes_per_file']:,} B/file",
                  flush=True)
            if not args.keep_data:
                shutil.rmtree(path, ignore_errors=True)
    finally:
        if not args.keep_data:
            shutil.rmtree(root, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
