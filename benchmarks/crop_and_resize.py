"""Benchmark cropcore.crop_and_resize against tf.image.crop_and_resize at equal thread counts.

Workload (platform notes, "crop_and_resize speed"): one 1080 x 1920 x 3 image, 256 random boxes
of 64-600 px per side (seeded), 224 x 224 output; uint8 and float32 input, bilinear and nearest.

Every (library, thread count) runs in its own fresh process, because TensorFlow fixes its thread
pools when it starts. Both sides allocate a new output per call, as callers do. The ratio is
TensorFlow's time over ours (higher is better), from the best of ``--repeats`` timed calls after
a warm-up call (which excludes Numba's one-off compilation). Each worker also hashes its outputs
so the parent can confirm both libraries produced identical bits.

    python benchmarks/crop_and_resize.py [--threads 1,2] [--repeats 15] [--no-tf]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

HEIGHT, WIDTH, CHANNELS = 1080, 1920, 3
NUM_BOXES = 256
BOX_SIDE = (64, 600)
CROP = (224, 224)
SEED = 0
CASES = [("uint8", "bilinear"), ("float32", "bilinear"), ("uint8", "nearest"),
         ("float32", "nearest")]


def workload():
    rng = np.random.default_rng(SEED)
    image = rng.integers(0, 256, size=(1, HEIGHT, WIDTH, CHANNELS), dtype=np.uint8)
    sides = rng.uniform(*BOX_SIDE, size=(NUM_BOXES, 2))
    top = rng.uniform(0, HEIGHT - 1 - sides[:, 0])
    left = rng.uniform(0, WIDTH - 1 - sides[:, 1])
    boxes = np.stack([top / (HEIGHT - 1), left / (WIDTH - 1), (top + sides[:, 0]) / (HEIGHT - 1),
                      (left + sides[:, 1]) / (WIDTH - 1)], axis=1).astype(np.float32)
    box_indices = np.zeros(NUM_BOXES, dtype=np.int32)
    return image, boxes, box_indices


def run_worker(library: str, threads: int, repeats: int) -> dict:
    image_u8, boxes, box_indices = workload()
    images = {"uint8": image_u8, "float32": image_u8.astype(np.float32)}
    if library == "tf":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        tf_boxes, tf_indices = tf.constant(boxes), tf.constant(box_indices)
        tf_images = {k: tf.constant(v) for k, v in images.items()}

        def call(dtype, method):
            return tf.image.crop_and_resize(tf_images[dtype], tf_boxes, tf_indices, CROP,
                                            method=method).numpy()
    else:
        import numba

        from cropcore import crop_and_resize

        numba.set_num_threads(threads)

        def call(dtype, method):
            return crop_and_resize(images[dtype], boxes, box_indices, CROP, method)

    results = {}
    for dtype, method in CASES:
        start = time.perf_counter()
        digest = hashlib.sha256(call(dtype, method).tobytes()).hexdigest()[:16]
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = call(dtype, method)
            times.append(time.perf_counter() - start)
            del out
        results[f"{dtype}/{method}"] = {"best_ms": 1e3 * min(times),
                                         "median_ms": 1e3 * float(np.median(times)),
                                         "first_ms": 1e3 * first, "digest": digest}
    return results


def spawn(library: str, threads: int, repeats: int) -> dict:
    env = dict(os.environ)
    env["NUMBA_NUM_THREADS"] = str(max(threads, os.cpu_count() or 1))
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    cmd = [sys.executable, __file__, "--worker", library, "--threads", str(threads),
           "--repeats", str(repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{library} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per case")
    parser.add_argument("--no-tf", action="store_true", help="skip TensorFlow")
    parser.add_argument("--worker", choices=["tf", "cropcore"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, int(args.threads), args.repeats)))
        return

    print(f"crop_and_resize: 1x{HEIGHT}x{WIDTH}x{CHANNELS} image, {NUM_BOXES} boxes of "
          f"{BOX_SIDE[0]}-{BOX_SIDE[1]} px, output {CROP[0]}x{CROP[1]}; best of {args.repeats}")
    print(f"{'threads':>7}  {'input':<8} {'method':<9} {'tf ms':>8} {'cropcore ms':>12} "
          f"{'(median)':>9} {'ratio':>7}  same bits")
    for threads in (int(t) for t in args.threads.split(",")):
        ours = spawn("cropcore", threads, args.repeats)
        theirs = None if args.no_tf else spawn("tf", threads, args.repeats)
        for key, result in ours.items():
            dtype, method = key.split("/")
            tf_ms = theirs[key]["best_ms"] if theirs else float("nan")
            same = "-" if theirs is None else str(theirs[key]["digest"] == result["digest"])
            print(f"{threads:>7}  {dtype:<8} {method:<9} {tf_ms:>8.1f} {result['best_ms']:>12.1f} "
                  f"{result['median_ms']:>9.1f} {tf_ms / result['best_ms']:>6.1f}x  {same}")
    print(f"first call in a fresh process (includes JIT compile or cache load): "
          f"{ours['uint8/bilinear']['first_ms']:.0f} ms")


if __name__ == "__main__":
    main()
