"""``crop_and_resize`` with TensorFlow's CPU semantics, bit for bit, several times faster.

NumPy computes the sampling coordinates, in float32 and in exactly the operation order of
TensorFlow's ``CropAndResize`` CPU kernel. Numba kernels turn them into taps and weights once per
box and do the per-pixel work, reading all of a pixel's channels as one short vector. The kernels
are compiled on first use and cached on disk (``cache=True``): importing this module does not
import Numba, and later processes (Ray workers) load the machine code instead of compiling it.

Bit-exactness rests on every float32 operation being rounded on its own. Numba only fuses
``a * b + c`` into one fused multiply-add (a single rounding) under ``fastmath``, which is off
here, and the hand-written vector code carries no fast-math flags either.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import platform
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from cropcore import _outputs

__all__ = ["crop_and_resize", "release_output_memory"]

_METHODS = ("bilinear", "nearest")


def crop_and_resize(
    image: np.ndarray,
    boxes: np.ndarray,
    box_indices: np.ndarray,
    crop_size: Sequence[int],
    method: str = "bilinear",
    extrapolation_value: float = 0.0,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Cut boxes out of a batch of images and resize each to ``crop_size``, like TensorFlow.

    Args:
        image: ``[B, H, W, D]`` array of any integer or floating dtype. ``H`` and ``W`` must be
            positive; ``B`` and ``D`` may be zero.
        boxes: ``[N, 4]`` normalized boxes ``(y1, x1, y2, x2)``, converted to float32, which must
            be finite. ``y1 > y2`` (or ``x1 > x2``) flips the crop; coordinates outside
            ``[0, 1]`` sample outside the image.
        box_indices: ``[N]`` integers in ``[0, B)``: the image each box is cut from.
        crop_size: ``(crop_height, crop_width)``, two positive integers.
        method: ``"bilinear"`` or ``"nearest"``.
        extrapolation_value: the value (as float32) of samples outside the image.
        out: optional C-contiguous float32 array ``[N, crop_height, crop_width, D]`` to write
            the result into (and return). Reusing one across calls saves allocating and
            page-faulting a fresh output every time, which is a large part of the cost for big
            outputs (256 crops of 224x224x3 are 154 MB).

    Returns:
        float32 array ``[N, crop_height, crop_width, D]`` (``out`` when given), bit-exact with
        ``tf.image.crop_and_resize`` on CPU. A new output of 4 MiB or more reuses the memory of
        the last such output the caller dropped (``del`` or replaced, with every view of it),
        when the size is the same: TensorFlow's allocator does the same, so a loop that
        replaces its result pays no page faults from the third call on. That memory (one
        output, at most 1 GiB) stays with the process until a new output of another size of
        4 MiB or more, or ``release_output_memory()``.

    Raises:
        ValueError: on a malformed argument, a box index outside ``[0, B)`` or a non-finite box;
            the message says what was expected and what was received.

    Convention:
        - Boxes are ``(y1, x1, y2, x2)``, normalized.
        - Corner-aligned sampling: normalized ``y`` is pixel ``y * (H - 1)`` and ``x`` is pixel
          ``x * (W - 1)``, so 0 and 1 are the centres of the first and last pixels. With a crop
          size of 1 on an axis, the single sample is the centre of the box on that axis.
        - Coordinates and interpolation are float32, each operation rounded on its own. A
          consequence kept on purpose (TensorFlow does it): with box ``[0, 0, 1, 1]`` the last
          sample can land one ulp beyond ``H - 1`` and is extrapolated.
        - A sample outside ``[0, H - 1] x [0, W - 1]``, or a non-finite one (from box arithmetic
          that overflows), is ``extrapolation_value``; it is never blended with pixels.
        - ``nearest`` rounds half away from zero (pixel 2.5 -> 3), not half to even.
        - Subnormal floats are flushed to zero in arithmetic, operands and results, as in
          TensorFlow's CPU threads (x86-64's FTZ and DAZ, set while computing and restored
          after); copies (nearest from float32, the extrapolation value) keep them.

    Uses ``numba.get_num_threads()`` threads; limit them with ``numba.set_num_threads``.
    """
    image, boxes, box_indices, (crop_height, crop_width), extrapolation = _validate(
        image, boxes, box_indices, crop_size, method, extrapolation_value
    )
    _, height, width, depth = image.shape
    num_boxes = boxes.shape[0]
    shape = (num_boxes, crop_height, crop_width, depth)
    if out is None:
        out = _outputs.empty(shape, np.float32)
    elif not (isinstance(out, np.ndarray) and out.shape == shape and out.dtype == np.float32
              and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(
            f"out must be a writeable C-contiguous float32 array of shape {shape}, got "
            f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}"
        )
    elif np.may_share_memory(out, image):
        raise ValueError("out must not share memory with image (the kernels read the image "
                         "while they write out)")
    if out.size == 0:
        return out

    kernels = _kernels()
    y1, x1, y2, x2 = (np.ascontiguousarray(boxes[:, i]) for i in range(4))
    with _flushing_subnormals(kernels):  # as TensorFlow's threads compute (see _run_threads)
        in_y = _sample_coordinates(y1, y2, height, crop_height)
        in_x = _sample_coordinates(x1, x2, width, crop_width)

    # The kernels see the batch as one flat array of [W * D] rows and read four channels at a
    # time, which can run up to three elements past the end of a row. That is harmless except
    # near the end of the array: the rows there are read from a padded copy instead (with the
    # same read-only flag, so that Numba sees one array type).
    flat = image.reshape(-1)
    row_size = width * depth
    tail_start = max(0, flat.size - row_size * -(-_LANES // row_size))
    tail = np.zeros(flat.size - tail_start + _LANES, dtype=image.dtype)
    tail[: flat.size - tail_start] = flat[tail_start:]
    tail.flags.writeable = image.flags.writeable
    threads = kernels.get_num_threads()
    task_box, task_start, task_stop = _split_tasks(num_boxes, crop_height, threads)
    kernel = kernels.nearest if method == "nearest" else kernels.bilinear
    args = (flat, tail, tail_start, height, row_size, box_indices, task_box, task_start,
            task_stop, in_y, in_x, np.float32(height - 1), np.float32(width - 1), depth,
            # in an array: a float32 argument is converted from a double on the way in, which
            # in flush mode would turn a subnormal extrapolation value (a copy in TF) into 0
            np.full(1, extrapolation, np.float32),
            out.reshape(num_boxes, crop_height, crop_width * depth))
    _run_threads(_flushed(kernel, kernels), args, len(task_box), threads)
    return out


def release_output_memory() -> None:
    """Free the memory ``crop_and_resize`` keeps from the last large output the caller dropped
    (see its Returns); the next large output is then allocated fresh."""
    _outputs.release()


def _validate(image, boxes, box_indices, crop_size, method, extrapolation_value):
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(
            f"image must be 4-D [batch, height, width, depth], got shape {image.shape}"
        )
    native = image.dtype.newbyteorder("=")
    if image.dtype == np.bool_ or image.dtype.kind not in "iuf" or native.itemsize > 8:
        raise ValueError(f"image must have an integer or a float16, float32 or float64 dtype, "
                         f"got {image.dtype}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"image height and width must be positive, got shape {image.shape}")

    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {boxes.shape}")
    if boxes.size and (boxes.dtype == np.bool_ or boxes.dtype.kind not in "iuf"):
        raise ValueError(f"boxes must be numeric, got dtype {boxes.dtype}")
    with np.errstate(over="ignore"):  # a float64 box beyond float32 range is rejected below
        boxes = boxes.astype(np.float32)
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"boxes must be finite (as float32), got non-finite boxes at rows "
            f"{np.flatnonzero(~finite)[:5].tolist()}"
        )

    box_indices = np.asarray(box_indices)
    if box_indices.shape != (boxes.shape[0],):
        raise ValueError(
            f"box_indices must have shape [N] = [{boxes.shape[0]}] (one per box), "
            f"got {box_indices.shape}"
        )
    if box_indices.size and (box_indices.dtype == np.bool_ or box_indices.dtype.kind not in "iu"):
        raise ValueError(f"box_indices must be integers, got dtype {box_indices.dtype}")
    batch = image.shape[0]
    outside = (box_indices < 0) | (box_indices >= batch)
    if outside.any():
        raise ValueError(
            f"box_indices must be in [0, {batch}) (the image batch size), got "
            f"{box_indices[outside][:5].tolist()} at positions "
            f"{np.flatnonzero(outside)[:5].tolist()}"
        )
    box_indices = box_indices.astype(np.intp)

    if (
        isinstance(crop_size, str | bytes)
        or not isinstance(crop_size, Sequence | np.ndarray)
        or len(crop_size) != 2
        or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool | np.bool_) and s > 0
            for s in crop_size
        )
    ):
        raise ValueError(
            f"crop_size must be two positive integers (crop_height, crop_width), got {crop_size!r}"
        )
    crop_size = (int(crop_size[0]), int(crop_size[1]))

    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not isinstance(extrapolation_value, numbers.Real):
        raise ValueError(
            f"extrapolation_value must be a real number, got {extrapolation_value!r}"
        )
    try:
        float(extrapolation_value)
    except OverflowError:  # an int beyond any float
        raise ValueError(f"extrapolation_value must be within float range, got an integer "
                         f"of {int(extrapolation_value).bit_length()} bits") from None

    # One compiled kernel per dtype, for native byte order and C order. Numba has no float16
    # arrays; widening them to float32 is exact, so the results are the same.
    if native == np.float16:  # either byte order
        image = image.astype(np.float32)
    elif image.dtype != native:
        image = image.astype(native)
    image = np.ascontiguousarray(image)
    return image, boxes, box_indices, crop_size, np.float32(extrapolation_value)


def _sample_coordinates(lo: np.ndarray, hi: np.ndarray, size: int, crop: int) -> np.ndarray:
    """[N, crop] float32 source coordinates along one axis, in TensorFlow's operation order.
    Overflow is allowed: it makes coordinates non-finite, and those count as outside."""
    last = np.float32(size - 1)
    with np.errstate(over="ignore", invalid="ignore"):
        if crop > 1:
            scale = ((hi - lo) * last) / np.float32(crop - 1)
            steps = np.arange(crop, dtype=np.float32)
            return lo[:, None] * last + steps[None, :] * scale[:, None]
        # TensorFlow writes 0.5 * (lo + hi) * (size - 1): the sum is float32, the rest double.
        centre = (0.5 * (lo + hi).astype(np.float64)) * np.float64(size - 1)
        return centre.astype(np.float32)[:, None]


# --- threads -------------------------------------------------------------------------------------
# The kernels are serial and release the GIL; the calling thread and a small pool each take a
# share of the tasks. Numba's parallel loops (prange) would do the same, but compile about three
# times slower per image dtype. The thread count still follows numba.set_num_threads.
_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _split_tasks(num_boxes: int, crop_height: int, threads: int):
    """(box, first row, stop row) of each task: one task per box when there are plenty of boxes,
    bands of rows when a few large crops would otherwise leave threads idle."""
    bands = min(crop_height, max(1, -(-4 * threads // num_boxes)))
    band = -(-crop_height // bands)
    bands = -(-crop_height // band)
    box = np.repeat(np.arange(num_boxes, dtype=np.intp), bands)
    start = np.tile(np.arange(bands, dtype=np.intp) * band, num_boxes)
    stop = np.minimum(start + band, crop_height)
    return box, start, stop


def _run_threads(kernel, args, num_tasks: int, threads: int) -> None:
    """kernel(first, last, *args) over ``threads`` contiguous ranges of tasks, concurrently.
    Contiguous ranges keep each thread's output in its own pages: threads that fault in (zero)
    the same fresh huge page wait for each other."""
    global _POOL, _POOL_SIZE
    threads = min(threads, num_tasks)
    if threads <= 1:
        kernel(0, num_tasks, *args)
        return
    with _POOL_LOCK:
        if _POOL_SIZE < threads - 1:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(threads - 1, thread_name_prefix="crop_and_resize")
            _POOL_SIZE = threads - 1
        pool = _POOL
    bounds = [num_tasks * k // threads for k in range(threads + 1)]
    futures = [pool.submit(kernel, bounds[k], bounds[k + 1], *args) for k in range(1, threads)]
    try:
        kernel(bounds[0], bounds[1], *args)
    finally:
        for future in futures:
            future.result()


# TensorFlow runs its CPU kernels with subnormal floats flushed to zero: as inputs of arithmetic
# (x86's DAZ) and as results (FTZ). So a subnormal pixel or box coordinate counts as 0 there, and
# an interpolation whose result would be subnormal gives 0; a copy (nearest from float32, or the
# extrapolation value) keeps one. The kernels and the coordinates run in the same mode, set in
# the MXCSR register of each thread that computes, and restored after. Elsewhere than x86-64,
# the mode is left as it is (subnormals are kept).
_FLUSH_BITS = 0x8040  # MXCSR's FTZ (bit 15) and DAZ (bit 6)
#: Whether crop_and_resize flushes subnormals as TensorFlow does: on x86-64 only. (TensorFlow
#: flushes on ARM too, with FPCR's FZ bit; cropcore does not set it there yet, so on ARM results
#: with subnormal operands or results can differ from TensorFlow's.)
FLUSHES_SUBNORMALS = platform.machine().lower() in ("x86_64", "amd64")


@contextlib.contextmanager
def _flushing_subnormals(kernels: SimpleNamespace):
    if kernels.read_mxcsr is None:
        yield
        return
    saved = kernels.read_mxcsr()
    try:
        kernels.write_mxcsr(saved | _FLUSH_BITS)
        yield
    finally:
        kernels.write_mxcsr(saved)


def _flushed(kernel, kernels: SimpleNamespace):
    """``kernel`` run with subnormals flushed, in whichever thread calls it."""
    def run(*args):
        with _flushing_subnormals(kernels):
            kernel(*args)

    return run


def _forget_pool() -> None:
    # A forked child inherits the pool object but not its threads.
    global _POOL, _POOL_SIZE, _POOL_LOCK
    _POOL, _POOL_SIZE, _POOL_LOCK = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


# --- compiled kernels ----------------------------------------------------------------------------
# LLVM does not vectorize reads at data-dependent columns, and scalar code spends most of its
# time converting and interpolating one channel at a time. Small intrinsics therefore load a
# pixel's channels as one 4-lane vector (converted to float32 exactly as a scalar cast would) and
# interpolate all lanes at once, with the same operations and roundings as the scalar code.
# A pixel with fewer than four channels also reads (and computes garbage for) the start of the
# next pixel, and its 4-lane store spills into the next pixel's slots, which the next pixel then
# overwrites; buffers that receive such stores have _LANES spare elements.
#
# The kernels are plain Python functions until _kernels() compiles them on first use. The names
# below are placeholders that _kernels() binds to the Numba intrinsics first (Numba resolves
# globals when it compiles).
_LANES = 4
_lerp4 = _lerp4_rows = _lerp4_rows_out = _load4 = _mxcsr = _set_mxcsr = None
_KERNELS: SimpleNamespace | None = None
_KERNELS_LOCK = threading.Lock()


def _kernels() -> SimpleNamespace:
    global _KERNELS, _lerp4, _lerp4_rows, _lerp4_rows_out, _load4, _mxcsr, _set_mxcsr
    with _KERNELS_LOCK:
        if _KERNELS is None:
            import numba

            _lerp4, _lerp4_rows, _lerp4_rows_out, _load4 = _make_intrinsics()
            jit = numba.njit(cache=True, nogil=True)
            read_mxcsr = write_mxcsr = None
            if FLUSHES_SUBNORMALS:
                _mxcsr, _set_mxcsr = _mxcsr_intrinsics()
                read_mxcsr, write_mxcsr = jit(_read_mxcsr), jit(_write_mxcsr)
            _KERNELS = SimpleNamespace(
                bilinear=jit(_bilinear_kernel),
                nearest=jit(_nearest_kernel),
                get_num_threads=numba.get_num_threads,
                read_mxcsr=read_mxcsr,
                write_mxcsr=write_mxcsr,
            )
    return _KERNELS


# Module-level, like the kernels: Numba's disk cache keys a function by its code and globals,
# and a closure over an intrinsic would miss the cache in every new process.
def _read_mxcsr():
    return _mxcsr()


def _write_mxcsr(value):
    _set_mxcsr(value)


def _mxcsr_intrinsics():
    """Numba intrinsics that read and write this thread's MXCSR register (x86-64)."""
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    i32 = ir.IntType(32)
    call = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])

    @intrinsic
    def mxcsr(typingctx):
        def codegen(context, builder, signature, args):
            slot = cgutils.alloca_once(builder, i32)
            store = cgutils.get_or_insert_function(builder.module, call, "llvm.x86.sse.stmxcsr")
            builder.call(store, [builder.bitcast(slot, ir.IntType(8).as_pointer())])
            return builder.zext(builder.load(slot), ir.IntType(64))

        return types.int64(), codegen

    @intrinsic
    def set_mxcsr(typingctx, value):
        def codegen(context, builder, signature, args):
            slot = cgutils.alloca_once(builder, i32)
            builder.store(builder.trunc(args[0], i32), slot)
            load = cgutils.get_or_insert_function(builder.module, call, "llvm.x86.sse.ldmxcsr")
            builder.call(load, [builder.bitcast(slot, ir.IntType(8).as_pointer())])
            return context.get_dummy_value()

        return types.void(types.int64), codegen

    return mxcsr, set_mxcsr


def _make_intrinsics():
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    f32x4 = ir.VectorType(ir.FloatType(), _LANES)
    i32 = ir.IntType(32)

    def load_lanes(context, builder, array_type, array, index):
        """array[index:index + 4] as a vector of the array's dtype."""
        data = context.make_array(array_type)(context, builder, array).data
        dtype = array_type.dtype
        vector = ir.VectorType(context.get_data_type(dtype), _LANES)
        pointer = builder.bitcast(builder.gep(data, [index], inbounds=True), vector.as_pointer())
        return builder.load(pointer, align=dtype.bitwidth // 8)

    def to_float32(builder, value, dtype, float_type):
        """Each lane cast to float32 exactly as a scalar cast would (round to nearest)."""
        if isinstance(dtype, types.Float):
            return value if dtype.bitwidth == 32 else builder.fptrunc(value, float_type)
        if dtype.signed:
            return builder.sitofp(value, float_type)
        return builder.uitofp(value, float_type)

    def load_f32x4(context, builder, array_type, array, index):
        value = load_lanes(context, builder, array_type, array, index)
        return to_float32(builder, value, array_type.dtype, f32x4)

    def store_f32x4(context, builder, array_type, array, index, value):
        data = context.make_array(array_type)(context, builder, array).data
        pointer = builder.bitcast(builder.gep(data, [index], inbounds=True), f32x4.as_pointer())
        builder.store(value, pointer, align=4)

    def lerp(builder, a, b, weight):
        """a + (b - a) * weight, lane by lane, three separately rounded operations."""
        lanes = a.type.count
        splat = builder.insert_element(ir.Constant(a.type, ir.Undefined), weight, i32(0))
        splat = builder.shuffle_vector(splat, ir.Constant(a.type, ir.Undefined),
                                       ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))
        return builder.fadd(a, builder.fmul(builder.fsub(b, a), splat))

    def supported(src, dst):
        return (
            isinstance(src, types.Array) and src.ndim == 1 and src.layout == "C"
            and isinstance(src.dtype, types.Integer | types.Float)
            and isinstance(dst, types.Array) and dst.ndim == 1 and dst.layout == "C"
            and dst.dtype == types.float32 and dst.mutable
        )

    @intrinsic
    def lerp4(typingctx, src, lo, hi, weight, dst, at):
        """dst[at:at+4] = a + (b - a) * weight for a = src[lo:lo+4], b = src[hi:hi+4]."""
        if not supported(src, dst):
            return None
        sig = types.void(src, types.intp, types.intp, types.float32, dst, types.intp)

        def codegen(context, builder, signature, args):
            src_value, lo_value, hi_value, weight_value, dst_value, at_value = args
            a = load_f32x4(context, builder, signature.args[0], src_value, lo_value)
            b = load_f32x4(context, builder, signature.args[0], src_value, hi_value)
            value = lerp(builder, a, b, weight_value)
            store_f32x4(context, builder, signature.args[4], dst_value, at_value, value)
            return context.get_dummy_value()

        return sig, codegen

    def lerp_rows(context, builder, signature, args):
        """Both rows' horizontal lerps as one 8-lane computation, stored to dst_a and dst_b;
        returns the two 4-lane results."""
        src_value, off_a, off_b, lo, hi, weight_value, dst_a_value, dst_b_value, at = args[:9]
        src_type = signature.args[0]
        f32x8 = ir.VectorType(ir.FloatType(), 2 * _LANES)
        lanes = ir.VectorType(i32, 2 * _LANES)

        def pixels(column):
            a = load_lanes(context, builder, src_type, src_value, builder.add(off_a, column))
            b = load_lanes(context, builder, src_type, src_value, builder.add(off_b, column))
            both = builder.shuffle_vector(a, b, ir.Constant(lanes, list(range(2 * _LANES))))
            return to_float32(builder, both, src_type.dtype, f32x8)

        value = lerp(builder, pixels(lo), pixels(hi), weight_value)
        parts = []
        for half, (dst_type, dst_value) in enumerate(
            ((signature.args[6], dst_a_value), (signature.args[7], dst_b_value))
        ):
            part = builder.shuffle_vector(
                value, ir.Constant(f32x8, ir.Undefined),
                ir.Constant(ir.VectorType(i32, _LANES),
                            list(range(half * _LANES, (half + 1) * _LANES))))
            store_f32x4(context, builder, dst_type, dst_value, at, part)
            parts.append(part)
        return parts

    @intrinsic
    def lerp4_rows(typingctx, src, off_a, off_b, lo, hi, weight, dst_a, dst_b, at):
        """lerp4(src, off_a + lo, off_a + hi, weight, dst_a, at) and the same for off_b and
        dst_b, as one 8-lane computation (the usual case: both rows of a sample are new)."""
        if not (supported(src, dst_a) and supported(src, dst_b)):
            return None
        sig = types.void(src, types.intp, types.intp, types.intp, types.intp, types.float32,
                         dst_a, dst_b, types.intp)

        def codegen(context, builder, signature, args):
            lerp_rows(context, builder, signature, args)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def lerp4_rows_out(typingctx, src, off_a, off_b, lo, hi, weight, dst_a, dst_b, at,
                       weight_y, out, out_at):
        """lerp4_rows, then out[out_at:out_at+4] = a + (b - a) * weight_y of its two results
        (the output pixel, without a second pass over the rows)."""
        if not (supported(src, dst_a) and supported(src, dst_b) and supported(src, out)):
            return None
        sig = types.void(src, types.intp, types.intp, types.intp, types.intp, types.float32,
                         dst_a, dst_b, types.intp, types.float32, out, types.intp)

        def codegen(context, builder, signature, args):
            upper, lower = lerp_rows(context, builder, signature, args)
            store_f32x4(context, builder, signature.args[10], args[10], args[11],
                        lerp(builder, upper, lower, args[9]))
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def load4(typingctx, src, at_src, dst, at):
        """dst[at:at+4] = src[at_src:at_src+4]."""
        if not supported(src, dst):
            return None
        sig = types.void(src, types.intp, dst, types.intp)

        def codegen(context, builder, signature, args):
            value = load_f32x4(context, builder, signature.args[0], args[0], args[1])
            store_f32x4(context, builder, signature.args[2], args[2], args[3], value)
            return context.get_dummy_value()

        return sig, codegen

    return lerp4, lerp4_rows, lerp4_rows_out, load4


def _bilinear_kernel(first_task, last_task, flat, tail, tail_start, height, row_size,
                     box_indices, task_box, task_start, task_stop, in_y, in_x, y_last, x_last,
                     depth, extrapolation_cell, out):
    extrapolation = extrapolation_cell[0]
    crop_width = in_x.shape[1]
    row_len = crop_width * depth
    # Horizontally interpolated source rows in two slots, keyed by source row. These are exactly
    # TensorFlow's per-sample "top" and "bottom" values, so reusing them for the next output row
    # (which often shares a source row, always when upsampling) changes no bits.
    cache = np.empty((2, row_len + _LANES), dtype=np.float32)
    # Pixels whose 4-lane output store stays inside the row: x * depth + _LANES <= row_len.
    fused_width = min(crop_width, max(0, (row_len - _LANES) // depth + 1)) if depth else 0
    keys = np.empty(2, dtype=np.intp)
    lefts = np.empty(crop_width, dtype=np.intp)
    rights = np.empty(crop_width, dtype=np.intp)
    weights = np.empty(crop_width, dtype=np.float32)
    outside = np.empty(crop_width, dtype=np.intp)
    num_outside = 0
    box = -1
    for task in range(first_task, last_task):
        n = task_box[task]
        if n != box:
            box = n
            num_outside = 0
            for x in range(crop_width):
                v = in_x[n, x]
                if v >= 0 and v <= x_last:  # False for NaN
                    lo = int(np.floor(v))
                    lefts[x] = lo * depth
                    rights[x] = int(np.ceil(v)) * depth
                    # Minus the *integer* floor converted back, as TensorFlow does: at -0.0 this
                    # weight is -0.0 where v - floor(v) is +0.0, and the sign can reach the output.
                    weights[x] = v - np.float32(lo)
                else:
                    lefts[x] = rights[x] = 0
                    weights[x] = 0
                    outside[num_outside] = x
                    num_outside += 1
        first_row = box_indices[n] * height
        keys[:] = -1
        for y in range(task_start[task], task_stop[task]):
            dst = out[n, y]
            v = in_y[n, y]
            if not (v >= 0 and v <= y_last):
                dst[:] = extrapolation
                continue
            t = int(np.floor(v))
            b = int(np.ceil(v))
            w = v - np.float32(t)
            st = 0 if keys[0] == t else (1 if keys[1] == t else -1)
            sb = 0 if keys[0] == b else (1 if keys[1] == b else -1)
            fill_t = st < 0
            if fill_t:
                st = 1 if sb == 0 else 0
                keys[st] = t
                if b == t:
                    sb = st
            fill_b = sb < 0
            if fill_b:
                sb = 1 - st
                keys[sb] = b
            off_t = (first_row + t) * row_size
            off_b = (first_row + b) * row_size
            if fill_t and fill_b and depth <= _LANES and off_b < tail_start:
                # Both rows at once (the usual case when downsampling): one pass over the taps
                # that also writes the output pixel, except the last pixels, whose 4-lane store
                # would spill past the row. Here t < b, so neither row is in the tail.
                row_t = cache[st]
                row_b = cache[sb]
                for x in range(fused_width):
                    _lerp4_rows_out(flat, off_t, off_b, lefts[x], rights[x], weights[x], row_t,
                                    row_b, x * depth, w, dst, x * depth)
                for x in range(fused_width, crop_width):
                    _lerp4_rows(flat, off_t, off_b, lefts[x], rights[x], weights[x], row_t, row_b,
                                x * depth)
                for j in range(fused_width * depth, row_len):
                    dst[j] = row_t[j] + (row_b[j] - row_t[j]) * w
                for k in range(num_outside):
                    x = outside[k]
                    dst[x * depth : (x + 1) * depth] = extrapolation
                continue  # (the tail below, written out: falling through to it measured slower)
            for fill, slot, offset in ((fill_t, st, off_t), (fill_b, sb, off_b)):
                if not fill:
                    continue
                src = flat
                if offset >= tail_start:
                    src = tail
                    offset -= tail_start
                row = cache[slot]
                if depth <= _LANES:
                    for x in range(crop_width):
                        _lerp4(src, offset + lefts[x], offset + rights[x], weights[x], row,
                               x * depth)
                else:
                    for x in range(crop_width):
                        lo = offset + lefts[x]
                        hi = offset + rights[x]
                        for c in range(0, depth, _LANES):
                            _lerp4(src, lo + c, hi + c, weights[x], row, x * depth + c)
            upper = cache[st]
            lower = cache[sb]
            for j in range(row_len):
                dst[j] = upper[j] + (lower[j] - upper[j]) * w
            for k in range(num_outside):
                x = outside[k]
                dst[x * depth : (x + 1) * depth] = extrapolation


def _nearest_kernel(first_task, last_task, flat, tail, tail_start, height, row_size,
                    box_indices, task_box, task_start, task_stop, in_y, in_x, y_last, x_last,
                    depth, extrapolation_cell, out):
    extrapolation = extrapolation_cell[0]
    crop_width = in_x.shape[1]
    row_len = crop_width * depth
    # The current source row, resampled: consecutive output rows often repeat it.
    buffer = np.empty(row_len + _LANES, dtype=np.float32)
    columns = np.empty(crop_width, dtype=np.intp)
    outside = np.empty(crop_width, dtype=np.intp)
    num_outside = 0
    box = -1
    for task in range(first_task, last_task):
        n = task_box[task]
        if n != box:
            box = n
            num_outside = 0
            for x in range(crop_width):
                v = in_x[n, x]
                if v >= 0 and v <= x_last:  # False for NaN
                    # roundf(): half away from zero. For v >= 0, adding 0.5 in double is exact,
                    # unlike float32, where 0.49999997 + 0.5 rounds up to 1.
                    columns[x] = int(np.floor(np.float64(v) + 0.5)) * depth
                else:
                    columns[x] = 0
                    outside[num_outside] = x
                    num_outside += 1
        first_row = box_indices[n] * height
        key = -1
        for y in range(task_start[task], task_stop[task]):
            dst = out[n, y]
            v = in_y[n, y]
            if not (v >= 0 and v <= y_last):
                dst[:] = extrapolation
                continue
            source_row = int(np.floor(np.float64(v) + 0.5))
            if source_row != key:
                key = source_row
                src = flat
                offset = (first_row + source_row) * row_size
                if offset >= tail_start:
                    src = tail
                    offset -= tail_start
                if depth <= _LANES:
                    for x in range(crop_width):
                        _load4(src, offset + columns[x], buffer, x * depth)
                else:
                    for x in range(crop_width):
                        for c in range(0, depth, _LANES):
                            _load4(src, offset + columns[x] + c, buffer, x * depth + c)
                for k in range(num_outside):
                    x = outside[k]
                    buffer[x * depth : (x + 1) * depth] = extrapolation
            for j in range(row_len):
                dst[j] = buffer[j]
