"""Benchmark cropcore.codec's decode and encode against the OpenCV calls they replaced.

Workload: ``--images`` 1920 x 1080 JPEG q90 views of scikit-image's bundled photographs (the
benchmark's data generator, ``jobs.demodata``), and 300 x 300 crops of them at random places
(three per image). One process, one core (OpenCV limited to one thread). Every case runs in
short batches interleaved with its peers, round after round, so that load from other processes
on a shared machine hits all of them alike; times are the best batch per item, ratios are the
candidate's time over the baseline's (lower is faster). Encoded sizes are summed over all crops;
"lossless" checks that ``cv2.imdecode`` of every PNG gives back the crop exactly.

    python benchmarks/codec.py [--images 12] [--rounds 7]
"""

from __future__ import annotations

import argparse
import io
import time

import cv2
import numpy as np

from cropcore.codec import decode_image, encode_image
from jobs.demodata import photo_view, sample_photographs


def workload(num_images: int, seed: int = 0) -> tuple[list[bytes], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    photos = sample_photographs()
    jpegs, crops = [], []
    for index in range(num_images):
        pixels = photo_view(photos[index % len(photos)], (1920, 1080), rng)
        data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        jpegs.append(data)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        for _ in range(3):
            y, x = int(rng.integers(0, 1080 - 300)), int(rng.integers(0, 1920 - 300))
            crops.append(decoded[y : y + 300, x : x + 300])  # views, as the job encodes them
    return jpegs, crops


def _pil_rgb(crop: np.ndarray):
    from PIL import Image

    return Image.fromarray(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))


def _pil_save(crop: np.ndarray, fmt: str, **options) -> bytes:
    sink = io.BytesIO()
    _pil_rgb(crop).save(sink, fmt, **options)
    return sink.getvalue()


def decode_cases() -> dict:
    import simplejpeg

    buffer = np.empty(1920 * 1080 * 3, np.uint8)
    return {
        "cv2.imdecode (before)": lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), 1),
        "decode_image (new)": lambda d: decode_image(d),
        "decode_image reuse_buffer (job)": lambda d: decode_image(d, reuse_buffer=True),
        "simplejpeg buffer= (floor)": lambda d: simplejpeg.decode_jpeg(d, "BGR", buffer=buffer),
        "cv2 IMREAD_REDUCED_COLOR_2": lambda d: cv2.imdecode(
            np.frombuffer(d, np.uint8), cv2.IMREAD_REDUCED_COLOR_2
        ),
        "decode_image reduce=2": lambda d: decode_image(d, reduce=2, reuse_buffer=True),
    }


def png_cases() -> dict:
    def cv2_png(*params):
        return lambda c: cv2.imencode(".png", c, [cv2.IMWRITE_PNG_COMPRESSION, 1, *params])[1]

    cases = {
        "cv2 PNG zlib 1 (before)": cv2_png(),
        "encode_image png (new, fpng)": lambda c: encode_image(c, "png"),
        "cv2 PNG zlib 1, filter SUB, RLE": cv2_png(
            cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB,
            cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
        ),
        "cv2 PNG zlib 1, filter PAETH, RLE": cv2_png(
            cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH,
            cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
        ),
        "Pillow PNG level 1 (zlib-ng)": lambda c: _pil_save(c, "PNG", compress_level=1),
        "Pillow WebP lossless method 0": lambda c: _pil_save(
            c, "WEBP", lossless=True, method=0, quality=0
        ),
    }
    try:
        import imagecodecs

        cases["imagecodecs PNG zlib 1, UP, RLE"] = lambda c: imagecodecs.png_encode(
            cv2.cvtColor(c, cv2.COLOR_BGR2RGB), level=1, strategy=3, filter=32
        )
    except ImportError:
        pass
    return cases


def webp_cases() -> dict:
    return {
        "cv2 WebP q90 (method 4, before)": lambda c: encode_image(c, "webp"),
        "encode_image webp_method=0": lambda c: encode_image(c, "webp", webp_method=0),
        "encode_image webp_method=2": lambda c: encode_image(c, "webp", webp_method=2),
    }


def run(cases: dict, items: list, rounds: int) -> dict[str, dict]:
    results = {name: {"best": float("inf"), "bytes": 0} for name in cases}
    for name, fn in cases.items():  # warm-up; sizes
        outputs = [fn(item) for item in items]
        if not isinstance(outputs[0], np.ndarray) or outputs[0].ndim == 1:
            results[name]["bytes"] = sum(len(o) for o in outputs)
            results[name]["outputs"] = outputs
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            for item in items:
                fn(item)
            per_item = (time.perf_counter() - start) / len(items)
            results[name]["best"] = min(results[name]["best"], per_item)
    return results


def report(title: str, results: dict, baseline: str, crops=None) -> None:
    base = results[baseline]
    print(f"\n{title}")
    print("| case | ms per item | time vs before | size vs before | lossless |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        size = f"{r['bytes'] / base['bytes']:.3f}" if r["bytes"] and base["bytes"] else "-"
        lossless = "-"
        if crops is not None and "outputs" in r and ("PNG" in name or "lossless" in name
                                                      or "png" in name):
            lossless = "yes" if all(
                np.array_equal(cv2.imdecode(np.frombuffer(bytes(o), np.uint8), 1), c)
                for o, c in zip(r["outputs"], crops, strict=True)
            ) else "NO"
        print(f"| {name} | {r['best'] * 1e3:.3f} | {r['best'] / base['best']:.3f}x | {size} "
              f"| {lossless} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    jpegs, crops = workload(args.images)
    decoded = decode_cases()
    identical = all(
        np.array_equal(decoded["cv2.imdecode (before)"](d), decode_image(d)) for d in jpegs
    )
    print(f"{len(jpegs)} JPEGs 1920x1080 q90, {len(crops)} crops 300x300; one core; "
          f"best of {args.rounds} interleaved rounds")
    print(f"decode_image pixels identical to cv2.imdecode: {identical}")
    report("JPEG decode, 1920 x 1080 q90", run(decoded, jpegs, args.rounds),
           "cv2.imdecode (before)")
    report("lossless encode of a 300 x 300 crop", run(png_cases(), crops, args.rounds),
           "cv2 PNG zlib 1 (before)", crops)
    report("lossy WebP q90 encode of a 300 x 300 crop", run(webp_cases(), crops, args.rounds),
           "cv2 WebP q90 (method 4, before)")


if __name__ == "__main__":
    main()
