"""A numpy evaluator for the MIL programs the Core ML backend emits — how numerics are proven on Linux.

coremltools converts and saves on Linux but cannot predict there (`MLModel.predict` is macOS-only), so
the program is run here, op by op, with numpy. It walks a pymil `Program` — the one read back from the
saved `.mlpackage` (`load_package`), so what is checked is what ships — and knows exactly the ops that
lowering (lower.py) and coremltools' default MIL pass pipeline produce from the zoo, plus the weight
decompression ops of `coremltools.optimize.coreml` (int8 affine dequantization, palettization LUTs). Any
other op is refused with its name: better no answer than a wrong one.

Numerics model: every op computes in float32 (accumulations included) from its inputs and its result is
stored in the dtype the program declares for that output. An FP16 program (coremltools' `add_fp16_cast`
pass has typed nearly every op fp16) is therefore evaluated with every op output rounded to float16 —
the FP16 emulation. `force_fp16=True` rounds every float output (and constant) to float16 even in an fp32
program. Real hardware may accumulate in fp16 or fuse ops, so device results can differ slightly from
this model; the thresholds in the tests leave room for that.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

try:  # scipy comes with scikit-learn; the fallback is exact but slower
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover
    _erf = np.vectorize(math.erf, otypes=[np.float64])


class EvaluationError(RuntimeError):
    """The program holds an op (or a form of an op) the evaluator does not implement."""


def _f(x) -> np.ndarray:
    """Compute dtype: float32 for floats (fp16 inputs are widened), ints untouched."""
    x = np.asarray(x)
    return x.astype(np.float32) if x.dtype.kind == "f" else x


def _val(v, default=None):
    return default if v is None else v


# -------------------------------------------------------------------------------------- convolution
def _to_2d(x, w, strides, pad, dil):
    """1-D conv/pool as 2-D with H = 1."""
    return x[:, :, None, :], (None if w is None else w[:, :, None, :]), [1, *strides], [0, 0, *pad], [1, *dil]


def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    x, w = _f(x), _f(weight)
    nsp = x.ndim - 2
    strides = list(_val(strides, [1] * nsp))
    dil = list(_val(dilations, [1] * nsp))
    pad = _conv_pads(pad_type, pad, x.shape[2:], w.shape[2:], strides, dil)
    squeeze = nsp == 1
    if squeeze:
        x, w, strides, pad, dil = _to_2d(x, w, strides, pad, dil)
    if x.ndim != 4:
        raise EvaluationError(f"conv over {nsp} spatial dims")
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dil
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    groups = int(groups)
    if groups == 1:
        out = _dense_conv(xp, w, (sh, sw), (dh, dw), ho, wo)
    elif cg == 1:  # depthwise (channel multiplier o // c): one multiply-add per kernel tap
        xr = np.repeat(xp, o // c, axis=1) if o != c else xp
        out = np.zeros((n, o, ho, wo), np.float32)
        for i in range(kh):
            for j in range(kw):
                tap = xr[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
                out += tap * w[:, 0, i, j][None, :, None, None]
    else:
        og = o // groups
        out = np.concatenate([_dense_conv(xp[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og], (sh, sw), (dh, dw), ho, wo)
                              for g in range(groups)], axis=1)
    if bias is not None:
        out = out + _f(bias).reshape(1, -1, 1, 1)
    return out[:, :, 0, :] if squeeze else out


def _dense_conv(xp, w, strides, dil, ho, wo):
    o, c, kh, kw = w.shape
    (sh, sw), (dh, dw) = strides, dil
    if kh == kw == 1:
        cols = xp[:, :, : sh * (ho - 1) + 1: sh, : sw * (wo - 1) + 1: sw]
        return np.einsum("nchw,oc->nohw", cols, w[:, :, 0, 0], optimize=True)
    win = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :ho, :wo]  # (n, c, ho, wo, kh, kw)
    return np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)


def _conv_pads(pad_type, pad, spatial, kernel, strides, dil):
    if pad_type == "custom":
        return [int(p) for p in pad]
    if pad_type == "valid":
        return [0] * (2 * len(spatial))
    if pad_type == "same":
        out = []
        for size, k, s, d in zip(spatial, kernel, strides, dil):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            out += [total // 2, total - total // 2]
        return out
    raise EvaluationError(f"conv pad_type {pad_type}")


def conv_transpose(x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None,
                   dilations=None, groups=1):
    x, w = _f(x), _f(weight)
    nsp = x.ndim - 2
    strides = list(_val(strides, [1] * nsp))
    dil = list(_val(dilations, [1] * nsp))
    pad = [int(p) for p in _val(pad, [0] * 2 * nsp)] if pad_type == "custom" else [0] * 2 * nsp
    if pad_type not in ("custom", "valid"):
        raise EvaluationError(f"conv_transpose pad_type {pad_type}")
    squeeze = nsp == 1
    if squeeze:
        x, w, strides, pad, dil = _to_2d(x, w, strides, pad, dil)
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    groups = int(groups)
    cg = c // groups
    (sh, sw), (dh, dw) = strides, dil
    full = np.zeros((n, og * groups, (h - 1) * sh + (kh - 1) * dh + 1, (wd - 1) * sw + (kw - 1) * dw + 1), np.float32)
    for g in range(groups):
        xg, wg = x[:, g * cg:(g + 1) * cg], w[g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                full[:, g * og:(g + 1) * og, i * dh: i * dh + sh * (h - 1) + 1: sh, j * dw: j * dw + sw * (wd - 1) + 1: sw] += \
                    np.einsum("nchw,co->nohw", xg, wg[:, :, i, j], optimize=True)
    out = full[:, :, pad[0]: full.shape[2] - pad[1], pad[2]: full.shape[3] - pad[3]]
    if output_shape is not None:
        want = [int(v) for v in output_shape][-2:]
        if list(out.shape[2:]) != want:
            if any(wv < ov for wv, ov in zip(want, out.shape[2:])):
                raise EvaluationError("conv_transpose output_shape smaller than the computed output")
            out = np.pad(out, ((0, 0), (0, 0), (0, want[0] - out.shape[2]), (0, want[1] - out.shape[3])))
    if bias is not None:
        out = out + _f(bias).reshape(1, -1, 1, 1)
    return out[:, :, 0, :] if squeeze else out


# ------------------------------------------------------------------------------------------ pooling
def _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, reduce: str, exclude_padding=True):
    x = _f(x)
    nsp = x.ndim - 2
    k = [int(v) for v in kernel_sizes]
    strides = [int(v) for v in _val(strides, [1] * nsp)]
    pad = _conv_pads(pad_type, pad, x.shape[2:], k, strides, [1] * nsp)
    squeeze = nsp == 1
    if squeeze:
        x = x[:, :, None, :]
        k, strides, pad = [1, *k], [1, *strides], [0, 0, *pad]
    extra = []
    for axis in range(2):
        size, kk, s, pb, pe = x.shape[2 + axis], k[axis], strides[axis], pad[2 * axis], pad[2 * axis + 1]
        span = size + pb + pe - kk
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + pb:  # the last window must start inside the input
            out -= 1
        extra.append(max(0, (out - 1) * s + kk - (size + pb + pe)))
    widths = ((0, 0), (0, 0), (pad[0], pad[1] + extra[0]), (pad[2], pad[3] + extra[1]))
    fill = -np.inf if reduce == "max" else 0.0
    xp = np.pad(x, widths, constant_values=fill)
    win = sliding_window_view(xp, tuple(k), axis=(2, 3))[:, :, ::strides[0], ::strides[1]]
    if reduce == "max":
        out = win.max(axis=(-2, -1))
    else:
        total = win.sum(axis=(-2, -1))
        if exclude_padding:
            ones = np.pad(np.ones(x.shape[2:], np.float32), widths[2:])
            count = sliding_window_view(ones, tuple(k))[::strides[0], ::strides[1]].sum(axis=(-2, -1))
        else:  # padding counts, the ceil-mode overhang does not (as in ONNX/PyTorch)
            ones = np.pad(np.ones([x.shape[2] + pad[0] + pad[1], x.shape[3] + pad[2] + pad[3]], np.float32),
                          ((0, extra[0]), (0, extra[1])))
            count = sliding_window_view(ones, tuple(k))[::strides[0], ::strides[1]].sum(axis=(-2, -1))
        out = total / count
    return out[:, :, 0, :] if squeeze else out


def avg_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, exclude_padding_from_average=False,
             ceil_mode=False):
    return _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, "avg", bool(exclude_padding_from_average))


def max_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False):
    return _pool(x, kernel_sizes, strides, pad_type, pad, ceil_mode, "max")


# ------------------------------------------------------------------------------------- normalization
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    x = _f(x)
    axes = tuple(int(a) % x.ndim for a in (_val(axes, list(range(x.ndim)))))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + np.float32(epsilon))
    shape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
    if gamma is not None:
        y = y * _f(gamma).reshape(shape)
    if beta is not None:
        y = y + _f(beta).reshape(shape)
    return y


def instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    x = _f(x)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + np.float32(epsilon))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return y * (1 if gamma is None else _f(gamma).reshape(shape)) + (0 if beta is None else _f(beta).reshape(shape))


def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    x = _f(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - _f(mean).reshape(shape)) / np.sqrt(_f(variance).reshape(shape) + np.float32(epsilon))
    return y * (1 if gamma is None else _f(gamma).reshape(shape)) + (0 if beta is None else _f(beta).reshape(shape))


def softmax(x, axis=-1):
    x = _f(x)
    e = np.exp(x - x.max(axis=int(axis), keepdims=True))
    return e / e.sum(axis=int(axis), keepdims=True)


def gelu(x, mode="EXACT"):
    x = _f(x)
    if mode == "EXACT":
        return (0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))).astype(np.float32)
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2 / math.pi)) * (x + np.float32(0.044715) * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1.0 + np.exp(-1.702 * x))
    raise EvaluationError(f"gelu mode {mode}")


def _sigmoid(x):
    x = _f(x)
    return (0.5 * (np.tanh(0.5 * x) + 1.0)).astype(np.float32)  # overflow-free logistic


# ------------------------------------------------------------------------------------------ resizing
def _grid(n_in: int, n_out: int, mode: str) -> np.ndarray:
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            return np.array([(n_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0])
        g = i * (n_in - 1) / (n_out - 1)
    elif mode == "UNALIGN_CORNERS":
        s = n_in / n_out
        g = i * s + 0.5 * s - 0.5
    elif mode == "DEFAULT":
        g = i * ((n_in - n_in / n_out) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    else:
        raise EvaluationError(f"resize sampling mode {mode}")
    return np.clip(g, 0, n_in - 1)


def _interp(x, axis: int, grid: np.ndarray):
    lo = np.floor(grid).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (grid - lo).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT"):
    x = _f(x)
    y = _interp(x, x.ndim - 2, _grid(x.shape[-2], int(target_size_height), sampling_mode))
    return _interp(y, x.ndim - 1, _grid(x.shape[-1], int(target_size_width), sampling_mode))


def upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=True):
    x = _f(x)
    mode = "STRICT_ALIGN_CORNERS" if align_corners else "UNALIGN_CORNERS"
    h, w = int(math.floor(x.shape[-2] * scale_factor_height)), int(math.floor(x.shape[-1] * scale_factor_width))
    return resize_bilinear(x, h, w, mode)


def upsample_nearest_neighbor(x, scale_factor_height=1, scale_factor_width=1):
    sh, sw = float(scale_factor_height), float(scale_factor_width)
    if sh != int(sh) or sw != int(sw):
        raise EvaluationError("upsample_nearest_neighbor by a non-integer factor")
    return np.repeat(np.repeat(np.asarray(x), int(sh), axis=-2), int(sw), axis=-1)


# ------------------------------------------------------------------------------------------- layout
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    x = np.asarray(x)
    n = x.ndim
    stride = _val(stride, [1] * n)
    begin_mask, end_mask = _val(begin_mask, [False] * n), _val(end_mask, [False] * n)
    squeeze_mask = _val(squeeze_mask, [False] * n)
    index = []
    for a in range(n):
        if squeeze_mask[a]:
            index.append(int(begin[a]))
            continue
        index.append(slice(None if begin_mask[a] else int(begin[a]), None if end_mask[a] else int(end[a]),
                           int(stride[a])))
    return x[tuple(index)]


def split(x, num_splits=None, split_sizes=None, axis=0):
    x = np.asarray(x)
    axis = int(axis)
    if split_sizes is not None:
        cuts = np.cumsum([int(s) for s in split_sizes])[:-1]
        return tuple(np.split(x, cuts, axis=axis))
    return tuple(np.split(x, int(num_splits), axis=axis))


def pad(x, pad, mode="constant", constant_val=0.0):
    x = np.asarray(x)
    p = [int(v) for v in pad]
    k = len(p) // 2
    widths = [(0, 0)] * (x.ndim - k) + [(p[2 * i], p[2 * i + 1]) for i in range(k)]
    if mode == "constant":
        return np.pad(_f(x), widths, constant_values=float(constant_val))
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def _reduce(fn):
    def reduce(x, axes=None, keep_dims=False):
        x = _f(x)
        ax = None if axes is None else tuple(int(a) for a in axes)
        return fn(x, axis=ax, keepdims=bool(keep_dims))
    return reduce


# --------------------------------------------------------------------------------- weight decompression
def unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Indices packed LSB-first, `nbits` each (the layout of constexpr_lut_to_dense)."""
    bits = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[: nbits * count].reshape(count, nbits)
    return (bits.astype(np.int64) << np.arange(nbits)).sum(axis=1)


def constexpr_lut_to_dense(indices, lut, shape):
    lut = np.asarray(lut)
    if lut.ndim != 1:
        raise EvaluationError("constexpr_lut_to_dense with a per-block LUT (iOS18 form)")
    nbits = int(round(math.log2(lut.size)))
    count = int(np.prod(shape))
    return lut[unpack_bits(indices, nbits, count)].reshape([int(s) for s in shape])


def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    q = np.asarray(quantized_data)
    axis = int(axis) % q.ndim
    zp, sc = np.asarray(zero_point), np.asarray(scale)
    zp = zp.reshape([-1 if a == axis else 1 for a in range(q.ndim)]) if zp.ndim else zp
    sc = sc.reshape([-1 if a == axis else 1 for a in range(q.ndim)]) if sc.ndim else sc
    return (q.astype(np.float32) - zp.astype(np.float32)) * sc.astype(np.float32)


def _linear(x, weight, bias=None):
    y = np.matmul(_f(x), _f(weight).T)
    return y if bias is None else y + _f(bias)


def _matmul(x, y, transpose_x=False, transpose_y=False):
    x, y = _f(x), _f(y)
    if transpose_x:
        x = np.swapaxes(x, -1, -2)
    if transpose_y:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _cast(x, dtype):
    return np.asarray(x).astype({"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "bool": np.bool_,
                                 "int16": np.int16, "int8": np.int8, "uint8": np.uint8}[dtype])


def _clip(x, alpha, beta):
    return np.clip(_f(x), np.float32(alpha), np.float32(beta))


def _classify(probabilities, classes):
    probs = np.asarray(probabilities)
    labels = list(classes)
    flat = probs.reshape(-1, probs.shape[-1])
    return np.array([labels[int(i)] for i in flat.argmax(axis=-1)]), probs


OPS: dict[str, Callable] = {
    "conv": conv, "conv_transpose": conv_transpose, "linear": _linear, "matmul": _matmul,
    "add": lambda x, y: _f(x) + _f(y), "sub": lambda x, y: _f(x) - _f(y), "mul": lambda x, y: _f(x) * _f(y),
    "real_div": lambda x, y: _f(x) / _f(y), "pow": lambda x, y: np.power(_f(x), _f(y)),
    "maximum": lambda x, y: np.maximum(_f(x), _f(y)), "minimum": lambda x, y: np.minimum(_f(x), _f(y)),
    "relu": lambda x: np.maximum(_f(x), 0), "relu6": lambda x: np.clip(_f(x), 0, 6),
    "sigmoid": _sigmoid, "tanh": lambda x: np.tanh(_f(x)), "erf": lambda x: _erf(_f(x)).astype(np.float32),
    "sqrt": lambda x: np.sqrt(_f(x)), "rsqrt": lambda x, epsilon=1e-12: 1 / np.sqrt(_f(x) + np.float32(epsilon)),
    "exp": lambda x: np.exp(_f(x)), "abs": lambda x: np.abs(_f(x)), "square": lambda x: _f(x) ** 2,
    "inverse": lambda x, epsilon=1e-4: 1 / (_f(x) + np.float32(epsilon)),
    "softplus": lambda x: np.logaddexp(0, _f(x)), "silu": lambda x: _f(x) * _sigmoid(x),
    "gelu": gelu, "sigmoid_hard": lambda x, alpha=0.2, beta=0.5: np.clip(np.float32(alpha) * _f(x) + np.float32(beta), 0, 1),
    "leaky_relu": lambda x, alpha=0.01: np.where(_f(x) >= 0, _f(x), np.float32(alpha) * _f(x)),
    "clip": _clip, "softmax": softmax, "layer_norm": layer_norm, "instance_norm": instance_norm,
    "batch_norm": batch_norm, "linear_activation": lambda x, alpha=1.0, beta=0.0: np.float32(alpha) * _f(x) + np.float32(beta),
    "reduce_mean": _reduce(np.mean), "reduce_sum": _reduce(np.sum), "reduce_max": _reduce(np.max),
    "reduce_l2_norm": _reduce(lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))),
    "avg_pool": avg_pool, "max_pool": max_pool,
    "reshape": lambda x, shape: np.reshape(x, [int(s) for s in shape]),
    "transpose": lambda x, perm: np.transpose(x, [int(p) for p in perm]),
    "concat": lambda values, axis, interleave=False: np.concatenate([_f(v) for v in values], axis=int(axis)),
    "split": split, "slice_by_index": slice_by_index,
    "gather": lambda x, indices, axis=0, batch_dims=0, validate_indices=False: np.take(
        x, np.asarray(indices).astype(np.int64), axis=int(axis)),
    "tile": lambda x, reps: np.tile(x, [int(r) for r in reps]), "pad": pad,
    "squeeze": lambda x, axes=None: np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes)),
    "expand_dims": lambda x, axes: np.expand_dims(x, tuple(int(a) for a in axes)),
    "identity": lambda x: np.asarray(x), "cast": _cast,
    "upsample_nearest_neighbor": upsample_nearest_neighbor, "upsample_bilinear": upsample_bilinear,
    "resize_bilinear": resize_bilinear, "classify": _classify,
    "constexpr_affine_dequantize": constexpr_affine_dequantize, "constexpr_lut_to_dense": constexpr_lut_to_dense,
}


# -------------------------------------------------------------------------------------------- driver
def _nptype(var):
    from coremltools.converters.mil.mil import types

    dtype = var.dtype
    if types.is_tensor(var.sym_type) or types.is_scalar(var.sym_type):
        try:
            return types.nptype_from_builtin(dtype)
        except Exception:
            return None
    return None


def main_operations(program) -> list:
    return list(program.functions["main"].operations)


def evaluate(program, feeds: dict[str, np.ndarray], force_fp16: bool = False,
             keep: bool = False) -> dict[str, Any]:
    """Run `program`'s main function on `feeds` (input name → array). Returns output name → array.

    `keep=True` returns every intermediate value too (name → array), for op-by-op debugging.
    """
    func = program.functions["main"]
    env: dict[str, Any] = {}
    for name, var in func.inputs.items():
        if name not in feeds:
            raise EvaluationError(f"no value for program input '{name}'")
        env[var.name] = _store(np.asarray(feeds[name]).astype(_nptype(var) or np.float32), var, force_fp16)

    def value(v):
        if isinstance(v, (list, tuple)):
            return [value(e) for e in v]
        if v.name in env:
            return env[v.name]
        if v.val is not None:
            return v.val
        raise EvaluationError(f"value '{v.name}' used before it is computed")

    for op in func.operations:
        if op.op_type == "const":
            out = op.outputs[0]
            val = out.val
            env[out.name] = _store(np.asarray(val) if not isinstance(val, str) else val, out, force_fp16)
            continue
        fn = OPS.get(op.op_type)
        if fn is None:
            raise EvaluationError(f"the MIL evaluator has no implementation of op '{op.op_type}' (op {op.name})")
        kwargs = {}
        for k, v in op.inputs.items():
            if v is None:
                continue
            got = value(v)
            if isinstance(got, np.ndarray) and got.ndim == 0 and k not in ("x", "y"):
                got = got.item()
            if isinstance(got, (np.str_, np.bytes_)):
                got = str(got)
            kwargs[k] = got
        if op.op_type == "classify":
            kwargs["classes"] = [c for c in op.inputs["classes"].val] if hasattr(op.inputs["classes"], "val") \
                and op.inputs["classes"].val is not None else kwargs["classes"]
        try:
            result = fn(**kwargs)
        except EvaluationError:
            raise
        except TypeError as exc:
            raise EvaluationError(f"op '{op.op_type}' ({op.name}) has parameters the evaluator does not know: {exc}")
        results = result if isinstance(result, tuple) else (result,)
        for var, r in zip(op.outputs, results):
            env[var.name] = _store(r, var, force_fp16)
    outputs = {v.name: env[v.name] for v in func.outputs}
    return {**env, **outputs} if keep else outputs


def _store(value, var, force_fp16: bool):
    if isinstance(value, str) or (isinstance(value, np.ndarray) and value.dtype.kind in "USO"):
        return value
    dtype = _nptype(var)
    arr = np.asarray(value)
    if dtype is not None and arr.dtype != dtype:
        arr = arr.astype(dtype)
    if force_fp16 and arr.dtype.kind == "f" and arr.dtype != np.float16:
        arr = arr.astype(np.float16)
    return arr


# ------------------------------------------------------------------------------------------ packages
def load_package(path: Path):
    """The pymil Program stored in a saved `.mlpackage` (spec + weight file), as coremltools reads it."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    weights = Path(model.weights_dir) if getattr(model, "weights_dir", None) else \
        Path(path) / "Data" / "com.apple.CoreML" / "weights"
    return load(spec, spec.specificationVersion, str(weights))


def op_histogram(program) -> dict[str, int]:
    """Non-const op types of the main function (what the report and the package spec are compared on)."""
    counts: dict[str, int] = {}
    for op in main_operations(program):
        if op.op_type != "const":
            counts[op.op_type] = counts.get(op.op_type, 0) + 1
    return dict(sorted(counts.items()))
