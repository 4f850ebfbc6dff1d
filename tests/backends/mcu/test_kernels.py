"""The MCU int8 C kernels (edgevit/backends/mcu/kernels) against their numpy spec, integer_ops.py, bit for bit.

Host: all kernels are built once as a shared library (portable C path) and called through ctypes on
seeded random data, with guard bytes after every output and scratch buffer. Cortex-M: the whole set must
compile with -Werror for M7 and M4, and a generated C driver (every kernel, with the conv2d / depthwise /
linear / matmul SIMD cases and requantization extremes, plus a self-test of the private fast
requantization against the header's) runs on a Cortex-M7 in QEMU (mps2-an500, semihosting, outputs in hex)
— the __ARM_FEATURE_DSP path — and on the host under AddressSanitizer + UBSan. Each case is a `Case`
(kernel name + arguments + numpy expectation), shared by the ctypes runner and the driver generator.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import edgevit
from edgevit.backends.mcu.codegen import add_table, layernorm_rq2, weight16_layout
from edgevit.quant import integer_ops as K
from edgevit.quant import scheme as S_
from edgevit.quant.scheme import quantize_multiplier

KDIR = Path(edgevit.__file__).parent / "backends" / "mcu" / "kernels"
SOURCES = sorted(KDIR.glob("*.c"))
WARN = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
ARM_CPUS = {"cortex-m7": ["-mcpu=cortex-m7", "-mfpu=fpv5-sp-d16"],
            "cortex-m4": ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16"]}
ARM_FLAGS = ["-mthumb", "-mfloat-abi=hard", "-ffunction-sections", "-fdata-sections"]
GUARD = 16  # bytes after each output / scratch buffer that must stay untouched
I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1


def rng_for(*key) -> np.random.Generator:
    """A generator seeded by the test's own key (stable across runs and test selections)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def i8(rng, shape) -> np.ndarray:
    return rng.integers(-128, 128, shape).astype(np.int8)


def mults(real) -> tuple[np.ndarray, np.ndarray]:
    return quantize_multiplier(np.asarray(real, np.float64))


# ---- C struct layouts (ev_kernels.h field order) -------------------------------------------------------
STRUCTS = {
    "ev_conv2d_t": "n c h w cout oh ow kh kw stride_h stride_w pad_t pad_l dil_h dil_w group x_zp out_zp "
                   "*weight *bias *mult *shift *weight16",
    "ev_linear_t": "rows k n x_zp out_zp *weight *bias *mult *shift *weight16",
    "ev_matmul_t": "batch m k n a_batch_stride b_batch_stride a_zp b_zp out_zp mult shift",
    "ev_broadcast_t": "rank shape[6] a_strides[6] b_strides[6]",
    "ev_add_t": "dims:ev_broadcast_t a_zp b_zp out_zp a_mult a_shift b_mult b_shift out_mult out_shift *table",
    "ev_mul_t": "dims:ev_broadcast_t a_zp b_zp out_zp mult shift",
    "ev_layernorm_t": "rows len eps_q:i64 out_zp *mult *shift *beta *rq2",
    "ev_pool_t": "n c h w oh ow kh kw stride_h stride_w pad_t pad_l x_zp out_zp mult shift dil_h dil_w",
    "ev_reduce_mean_t": "outer reduce inner x_zp mult shift out_zp",
}


def _fields(spec: str):
    """(name, kind) with kind 'i32', 'i64', 'ptr', 'arr6' or a struct name."""
    for tok in spec.split():
        if tok.startswith("*"):
            yield tok[1:], "ptr"
        elif tok.endswith("[6]"):
            yield tok[:-3], "arr6"
        elif ":" in tok:
            name, kind = tok.split(":")
            yield name, kind
        else:
            yield tok, "i32"


CT = {}
for _name, _spec in STRUCTS.items():
    _ct = {"i32": ctypes.c_int32, "i64": ctypes.c_int64, "ptr": ctypes.c_void_p, "arr6": ctypes.c_int32 * 6}
    CT[_name] = type(_name, (ctypes.Structure,), {"_fields_": [(n, _ct.get(k) or CT[k]) for n, k in _fields(_spec)]})


# ---- cases ---------------------------------------------------------------------------------------------
@dataclass
class In:
    a: np.ndarray
    offset: int = 0  # elements


@dataclass
class Out:
    size: int


@dataclass
class Scratch:
    nbytes: int


@dataclass
class S:  # pointer to a struct; values: int, np.ndarray (pointer field), list (arr6), dict (nested struct)
    type: str
    values: dict


@dataclass
class Case:
    fn: str
    args: list
    expected: np.ndarray
    alias: int | None = None  # index of the In argument that the output buffer overwrites (in place)

    @property
    def out_size(self) -> int:
        return next(a.size for a in self.args if isinstance(a, Out))


def _struct_value(ctype, values: dict, keep: list):
    s = ctype()
    for name, kind in _fields(STRUCTS[ctype.__name__]):
        v = values[name]
        if kind == "ptr":
            if v is None:
                setattr(s, name, None)
            else:
                arr = np.ascontiguousarray(v)
                keep.append(arr)
                setattr(s, name, arr.ctypes.data)
        elif kind == "arr6":
            setattr(s, name, (ctypes.c_int32 * 6)(*(list(v) + [0] * (6 - len(v)))))
        elif kind in CT:
            setattr(s, name, _struct_value(CT[kind], v, keep))
        else:
            setattr(s, name, int(v))
    return s


def run_ctypes(lib, case: Case) -> np.ndarray:
    """Call the kernel; check the guard bytes after output and scratch; return the output."""
    keep, cargs, out, guards = [], [], None, []
    for a in case.args:
        if isinstance(a, S):
            s = _struct_value(CT[a.type], a.values, keep)
            keep.append(s)
            cargs.append(ctypes.byref(s))
        elif isinstance(a, In):
            arr = np.ascontiguousarray(a.a)
            keep.append(arr)
            cargs.append(ctypes.c_void_p(arr.ctypes.data + a.offset * arr.itemsize))
        elif isinstance(a, Out):
            if case.alias is not None:
                src = case.args[case.alias].a.reshape(-1)
                buf = np.full(max(src.size, a.size) + GUARD, 0x5A, np.uint8).view(np.int8)
                buf[:src.size] = src
                cargs[case.alias] = ctypes.c_void_p(buf.ctypes.data)  # the input IS the output buffer
            else:
                buf = np.full(a.size + GUARD, 0x5A, np.uint8).view(np.int8)
            out = (buf, max(a.size, case.args[case.alias].a.size if case.alias is not None else 0))
            keep.append(buf)
            cargs.append(ctypes.c_void_p(buf.ctypes.data))
        elif isinstance(a, Scratch):
            buf = np.full((a.nbytes + GUARD) // 2, 0x5A5A, np.int16)
            assert buf.ctypes.data % 4 == 0
            keep.append(buf)
            guards.append((buf, a.nbytes // 2))
            cargs.append(ctypes.c_void_p(buf.ctypes.data))
        else:
            cargs.append(ctypes.c_int32(int(a)))
    getattr(lib, case.fn)(*cargs)
    buf, used = out
    assert np.all(buf[used:].view(np.uint8) == 0x5A), f"{case.fn}: wrote past its output"
    for g, n in guards:
        assert np.all(g[n:] == 0x5A5A), f"{case.fn}: wrote past its scratch"
    return buf[:case.out_size].copy()


def check(lib, case: Case) -> None:
    got = run_ctypes(lib, case)
    exp = case.expected.reshape(-1)
    assert got.shape == exp.shape
    if not np.array_equal(got, exp):
        bad = np.flatnonzero(got != exp)
        raise AssertionError(f"{case.fn}: {bad.size}/{exp.size} differ, first at {bad[0]}: "
                             f"got {got[bad[:8]]} expected {exp[bad[:8]]}")


# ---- builders (numpy reference side) ---------------------------------------------------------------------
weight16 = weight16_layout  # the layout the code generator emits (EV_WEIGHT16)


def k2(k: int) -> int:
    return k + (k & 1)  # EV_WEIGHT16_ROW: k rounded up to even


def conv_case(rng, n, c, h, w, cout, kernel, stride=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), group=1,
              x_zp=0, out_zp=0, bias=True, negative=False, gain=1.0, wild=False, wide=False) -> Case:
    kh, kw = kernel
    cg = c // group
    x = i8(rng, (n, c, h, w))
    wq = rng.integers(-127, 128, (cout, cg, kh, kw)).astype(np.int8)
    b = rng.integers(-20000, 20000, cout).astype(np.int32) if bias else np.zeros(cout, np.int32)
    real = gain * rng.uniform(0.3, 3.0, cout) * 100 / (74 * 73 * np.sqrt(cg * kh * kw))
    if negative:
        real *= rng.choice([-1, 1], cout)
    m, s = mults(real)
    if wild:  # any (M, shift) and biases at the int32 limits: every branch of the requantization
        (m, s), b = wild_mults(rng, cout), wild_bias(rng, cout)
    ref = K.conv2d(x, x_zp, wq, b, m, s, out_zp, stride, pads, dil, group)
    oh, ow = ref.shape[2:]
    p = dict(n=n, c=c, h=h, w=w, cout=cout, oh=oh, ow=ow, kh=kh, kw=kw, stride_h=stride[0], stride_w=stride[1],
             pad_t=pads[0], pad_l=pads[1], dil_h=dil[0], dil_w=dil[1], group=group, x_zp=x_zp, out_zp=out_zp,
             weight=None if wide and not group == c == cout else wq, bias=b if bias else None, mult=m, shift=s,
             weight16=weight16(wq, b, m, s, out_zp, group) if wide else None)
    if group == c == cout:  # EV_DEPTHWISE_SCRATCH_BYTES: one zero-point-padded channel plane
        scratch = ((oh - 1) * stride[0] + (kh - 1) * dil[0] + 1) * (((ow - 1) * stride[1] + (kw - 1) * dil[1] + 5) & ~3)
    else:  # EV_CONV2D_SCRATCH_BYTES
        scratch = 8 * k2(cg * kh * kw) + 4 * cg * kh
    return Case("ev_conv2d", [S("ev_conv2d_t", p), In(x), Out(ref.size), Scratch(scratch)], ref)


def linear_case(rng, rows, k, n, x_zp=0, out_zp=0, bias=True, negative=False, wild=False, wide=False) -> Case:
    x = i8(rng, (rows, k))
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)  # integer_ops layout (k, n)
    b = rng.integers(-20000, 20000, n).astype(np.int32) if bias else np.zeros(n, np.int32)
    real = rng.uniform(0.3, 3.0, n) * 100 / (74 * 73 * np.sqrt(k))
    if negative:
        real *= rng.choice([-1, 1], n)
    m, s = mults(real)
    if wild:
        (m, s), b = wild_mults(rng, n), wild_bias(rng, n)
    ref = K.linear(x, x_zp, w, b, m, s, out_zp)
    p = dict(rows=rows, k=k, n=n, x_zp=x_zp, out_zp=out_zp, weight=None if wide else np.ascontiguousarray(w.T),
             bias=b if bias else None, mult=m, shift=s, weight16=weight16(w.T, b, m, s, out_zp) if wide else None)
    return Case("ev_linear", [S("ev_linear_t", p), In(x), Out(ref.size), Scratch(8 * k2(k))], ref)


def matmul_case(rng, batch, m, k, n, a_bcast=False, b_bcast=False, a_zp=0, b_zp=0, out_zp=0, gain=1.0,
                wild=False) -> Case:
    a = i8(rng, (1 if a_bcast else batch, m, k))
    b = i8(rng, (1 if b_bcast else batch, k, n))
    mm, sh = mults(gain * rng.uniform(0.5, 2.0) * 100 / (74 * 74 * np.sqrt(k)))
    if wild:
        mm, sh = wild_mults(rng, 1)
    ref = K.matmul(a, a_zp, b, b_zp, mm, sh, out_zp)
    ref = np.broadcast_to(ref, (batch, m, n))
    p = dict(batch=batch, m=m, k=k, n=n, a_batch_stride=0 if a_bcast else m * k,
             b_batch_stride=0 if b_bcast else k * n, a_zp=a_zp, b_zp=b_zp, out_zp=out_zp, mult=int(mm[0]),
             shift=int(sh[0]))
    scratch = -(-n // 2) * (4 * k2(k) + 32) + 8 * k2(k)  # EV_MATMUL_SCRATCH_BYTES
    return Case("ev_matmul", [S("ev_matmul_t", p), In(a), In(b), Out(ref.size), Scratch(scratch)], ref)


def bcast_dims(sa, sb, pad6=False) -> tuple[dict, tuple]:
    out = np.broadcast_shapes(sa, sb)
    if pad6:
        out = (1,) * (6 - len(out)) + tuple(out)

    def strides(shape):
        a = np.broadcast_to(np.zeros(shape, np.int8), out)
        return [int(v) for v in a.strides]  # int8: bytes are elements; 0 on broadcast axes

    if not out:  # scalar ⊕ scalar: one element
        return dict(rank=1, shape=[1], a_strides=[0], b_strides=[0]), ()
    return dict(rank=len(out), shape=list(out), a_strides=strides(sa), b_strides=strides(sb)), tuple(out)


def wild_mult(rng) -> tuple[int, int]:
    """Any (M, shift) the C types can carry: M over all of int32 (INT32_MIN included), shift ∈ [−31, 30]."""
    m = int(rng.choice([I32_MIN, I32_MAX, -1, 0, 1, int(rng.integers(I32_MIN, I32_MAX))]))
    return m, int(rng.integers(-31, 31))


def wild_mults(rng, n) -> tuple[np.ndarray, np.ndarray]:
    m, s = zip(*(wild_mult(rng) for _ in range(n)))
    return np.array(m, np.int32), np.array(s, np.int32)


def wild_bias(rng, n) -> np.ndarray:
    """Biases over the whole int32 range (sum + bias saturates), some at the extremes."""
    b = rng.integers(I32_MIN, I32_MAX, n, endpoint=True)
    b[rng.random(n) < 0.3] = I32_MAX
    b[rng.random(n) < 0.3] = I32_MIN
    return b.astype(np.int32)


def add_case(rng, sa, sb, pad6=False, sub=False, wild=False, zps=None, table=False) -> Case:
    """table: with codegen.add_table's per-input table (where codegen would give one)"""
    a, b = i8(rng, sa), i8(rng, sb)
    za, zb, zo = zps if zps is not None else [int(v) for v in rng.integers(-128, 128, 3)]
    if wild:
        (am, ash), (bm, bsh), (om, osh) = wild_mult(rng), wild_mult(rng), wild_mult(rng)
    else:
        sca, scb = rng.uniform(0.01, 0.1, 2)
        so = rng.uniform(0.5, 1.5) * (sca + scb)
        twice = 2 * max(sca, scb)
        (am,), (ash,) = mults(sca / twice)
        (bm,), (bsh,) = mults((-1 if sub else 1) * scb / twice)
        (om,), (osh,) = mults(twice / (2 ** K.ADD_LEFT_SHIFT * so))
    ref = K.add(a, za, b, zb, am, ash, bm, bsh, om, osh, zo)
    dims, out = bcast_dims(sa, sb, pad6)
    ref = np.broadcast_to(ref, out)
    p = dict(dims=dims, a_zp=za, b_zp=zb, out_zp=zo, a_mult=am, a_shift=ash, b_mult=bm, b_shift=bsh, out_mult=om,
             out_shift=osh, table=add_table(za, zb, am, ash, bm, bsh, om, osh) if table else None)
    return Case("ev_add", [S("ev_add_t", p), In(a), In(b), Out(ref.size)], ref)


def mul_case(rng, sa, sb, pad6=False, wild=False, zps=None) -> Case:
    a, b = i8(rng, sa), i8(rng, sb)
    za, zb, zo = zps if zps is not None else [int(v) for v in rng.integers(-128, 128, 3)]
    if wild:
        m, s = wild_mult(rng)
    else:
        (m,), (s,) = mults(rng.choice([-1, 1]) * rng.uniform(0.3, 3) / 128)
    ref = K.mul(a, za, b, zb, m, s, zo)
    dims, out = bcast_dims(sa, sb, pad6)
    ref = np.broadcast_to(ref, out)
    p = dict(dims=dims, a_zp=za, b_zp=zb, out_zp=zo, mult=m, shift=s)
    return Case("ev_mul", [S("ev_mul_t", p), In(a), In(b), Out(ref.size)], ref)


def rescale_case(rng, count, x_zp, mult, shift, out_zp) -> Case:
    x = i8(rng, count)
    ref = K.rescale(x, x_zp, mult, shift, out_zp)
    return Case("ev_rescale", [count, x_zp, mult, shift, out_zp, In(x), Out(count)], ref)


def softmax_table(scale: float) -> np.ndarray:
    return np.round(2 ** K.SOFTMAX_EXP_BITS * np.exp(-scale * np.arange(256))).astype(np.int64)


def softmax_case(rng, rows, length, scale) -> Case:
    x = i8(rng, (rows, length))
    if rows > 2:
        x[0] = x[0, 0]  # constant row
        x[1, length // 2] = 127  # one dominant logit
    table = softmax_table(scale)
    ref = K.softmax(x, table)
    return Case("ev_softmax", [rows, length, In(table.astype(np.uint16)), In(x), Out(ref.size)], ref)


def layernorm_case(rng, rows, length, spread=1.0, eps=1e-5, s_x=0.05, out_zp=None, wild=False, rq2=True,
                   x=None, pos=False) -> Case:
    """pos: γ > 0 (every M ≥ 0, ev_layernorm's other rq2 loop); x: the input instead of random rows."""
    given = x
    x = np.clip(rng.standard_normal((rows, length)) * spread * 40 + rng.standard_normal((rows, 1)) * 20, -128, 127)
    x = x.astype(np.int8)
    if rows > 2:
        x[0] = x[0, 0]  # zero variance: σ comes from ε alone
    if given is not None:
        x = given
    gamma, beta = rng.uniform(0.1 if pos else -1.5, 1.5, length), rng.uniform(-0.5, 0.5, length)
    s_o = rng.uniform(0.01, 0.05)
    out_zp = int(rng.integers(-128, 128)) if out_zp is None else out_zp
    m, s = mults(gamma / (2 ** K.LN_OUT_BITS * s_o))
    beta_q = np.round(beta / s_o).astype(np.int32)
    if wild:  # β_q within ±2^30: integer_ops.layernorm adds z_o + β_q in int32 (numpy), which wraps near 2^31
        (m, s), beta_q = wild_mults(rng, length), rng.integers(-2 ** 30, 2 ** 30, length).astype(np.int32)
    eps_q = int(round(eps * 2 ** K.LN_VAR_BITS / s_x ** 2))
    ref = K.layernorm(x, m, s, beta_q, eps_q, out_zp)
    p = dict(rows=rows, len=length, eps_q=eps_q, out_zp=out_zp, mult=m, shift=s, beta=beta_q,
             rq2=layernorm_rq2(m, s, beta_q, out_zp) if rq2 else None)
    return Case("ev_layernorm", [S("ev_layernorm_t", p), In(x), Out(ref.size)], ref)


def pool_case(rng, kind, n, c, h, w, kernel, stride, pads, dil=(1, 1), x_zp=0, out_zp=0, wild=False) -> Case:
    x = i8(rng, (n, c, h, w))
    if kind == "avg":
        (m,), (s,) = mults(rng.uniform(0.5, 2.0) / (kernel[0] * kernel[1]))
        if wild:
            m, s = wild_mult(rng)
        ref = K.avgpool(x, x_zp, m, s, out_zp, kernel, stride, pads)
    else:
        m = s = 0
        ref = K.maxpool(x, kernel, stride, pads, dil)
    p = dict(n=n, c=c, h=h, w=w, oh=ref.shape[2], ow=ref.shape[3], kh=kernel[0], kw=kernel[1], stride_h=stride[0],
             stride_w=stride[1], pad_t=pads[0], pad_l=pads[1], x_zp=x_zp, out_zp=out_zp, mult=m, shift=s,
             dil_h=dil[0], dil_w=dil[1])
    return Case(f"ev_{kind}pool", [S("ev_pool_t", p), In(x), Out(ref.size)], ref)


def reduce_mean_case(rng, shape, axes, x_zp=0, out_zp=0, wild=False) -> Case:
    x = i8(rng, shape)
    axes = sorted(a % len(shape) for a in axes)
    assert axes == list(range(axes[0], axes[-1] + 1)), "contiguous axes"
    outer, red, inner = (int(np.prod(shape[:axes[0]])), int(np.prod(shape[axes[0]:axes[-1] + 1])),
                         int(np.prod(shape[axes[-1] + 1:])))
    (m,), (s,) = mults(rng.uniform(0.5, 2.0) / red)
    if wild:
        m, s = wild_mult(rng)
    ref = K.reduce_mean(x, x_zp, m, s, out_zp, axes, False)
    p = dict(outer=outer, reduce=red, inner=inner, x_zp=x_zp, mult=m, shift=s, out_zp=out_zp)
    return Case("ev_reduce_mean", [S("ev_reduce_mean_t", p), In(x), Out(ref.size)], ref)


def transpose_case(rng, shape, perm) -> Case:
    x = i8(rng, shape)
    ref = np.ascontiguousarray(x.transpose(perm))
    in_strides = np.array(x.strides, np.int32)[list(perm)]
    out_strides = np.array(ref.strides, np.int32)
    return Case("ev_copy", [len(shape), In(np.array(ref.shape, np.int32)), In(in_strides), In(out_strides), In(x),
                            Out(ref.size)], ref)


def view_case(rng, shape, index, perm=None) -> Case:
    """ev_copy of the strided view x[index].transpose(perm) (starting anywhere in x) to a contiguous y."""
    x = i8(rng, shape)
    view = x[index] if perm is None else x[index].transpose(perm)
    ref = np.ascontiguousarray(view)
    return Case("ev_copy", [view.ndim, In(np.array(view.shape, np.int32)), In(np.array(view.strides, np.int32)),
                            In(np.array(ref.strides, np.int32)), In(x, _offset(view, x)), Out(ref.size)], ref)


def copy_cases(rng) -> list[Case]:
    """ev_copy's merged runs (word copies from odd offsets, 16-byte blocks + words + bytes) and transposes
    (4 strided reads per word store + tails), ev_gather's rows."""
    g = i8(rng, (3, 4, 37))
    idx = np.array([3, 0, -1], np.int32)
    return [
        view_case(rng, (4, 6, 10), np.s_[:, 1:4, :]),  # rows 1..3: one run of 30 per outer index
        view_case(rng, (5, 23), np.s_[:, 3:22]),  # odd offset, runs of 19
        view_case(rng, (4, 6, 40), np.s_[:, 1:4, :]),  # runs of 120 at a word offset: memcpy
        view_case(rng, (2, 3, 37), np.s_[:, :, 1:]),  # runs of 36 at an odd offset: 16-byte blocks, words
        view_case(rng, (3, 90), np.s_[:, 1:]),  # runs of 89 at an odd offset: words
        view_case(rng, (2, 1, 9, 13), np.s_[:, :, :, :], (0, 1, 3, 2)),  # transpose, rows of 9
        view_case(rng, (3, 8, 5), np.s_[:, :, :], (0, 2, 1)),
        view_case(rng, (2, 7, 12), np.s_[1:, 2:6, 1:11], (2, 0, 1)),  # a strided view transposed
        view_case(rng, (64, 3, 16), np.s_[:, 1:, :], (1, 0, 2)),  # qkv-like: rows of 16 gathered
        Case("ev_gather", [3, 4, 37, In(idx), 3, In(g), Out(333)], np.take(g, idx, axis=1)),
    ]


def test_copy_views(lib):
    for case in copy_cases(rng_for("views")):
        check(lib, case)


# ---- host library ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc missing")
    so = tmp_path_factory.mktemp("evk_host") / "libevk.so"
    proc = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", *WARN, "-I", str(KDIR), *map(str, SOURCES), "-o", str(so)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lib = ctypes.CDLL(str(so))
    for name in ("ev_conv2d ev_linear ev_matmul ev_add ev_mul ev_rescale ev_lut ev_softmax ev_layernorm "
                 "ev_avgpool ev_maxpool ev_reduce_mean ev_copy ev_gather").split():
        getattr(lib, name).restype = None
    return lib


def test_struct_layouts_match_the_header(tmp_path):
    """The ctypes mirrors above (and so every test) follow ev_kernels.h: same size and field offsets."""
    if not shutil.which("gcc"):
        pytest.skip("gcc missing")
    lines = []
    for name in STRUCTS:
        lines.append(f'    printf("{name} size %zu\\n", sizeof({name}));')
        lines += [f'    printf("{name} {f} %zu\\n", offsetof({name}, {f}));' for f, _ in _fields(STRUCTS[name])]
    src = "#include <stddef.h>\n#include <stdio.h>\n#include \"ev_kernels.h\"\nint main(void) {\n" + \
        "\n".join(lines) + "\n    return 0;\n}\n"
    (tmp_path / "layout.c").write_text(src)
    proc = subprocess.run(["gcc", *WARN, "-I", str(KDIR), str(tmp_path / "layout.c"), "-o", str(tmp_path / "layout")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        name, f, value = line.split()
        ct = CT[name]
        assert int(value) == (ctypes.sizeof(ct) if f == "size" else getattr(ct, f).offset), line


def test_sources_are_self_contained():
    """No float, no malloc, no libc beyond <stdint.h>/<string.h> (and ACLE) in the kernel sources."""
    assert {p.name for p in SOURCES} >= {"ev_conv.c", "ev_matmul.c", "ev_elementwise.c", "ev_norm.c", "ev_pool.c",
                                        "ev_move.c"}
    for p in [*SOURCES, *KDIR.glob("*.h")]:
        text = re.sub(r"/\*.*?\*/", "", p.read_text(), flags=re.S)
        assert not re.search(r"\b(float|double|malloc|free|printf)\b", text), p.name
        for inc in re.findall(r'#include\s*[<"]([^>"]+)[>"]', text):
            assert inc in {"stdint.h", "string.h", "arm_acle.h", "ev_kernels.h", "ev_common.h"}, (p.name, inc)


# ---- conv2d ----------------------------------------------------------------------------------------------
CONV = {  # n, c, h, w, cout, kernel, kwargs
    "3x3_pad_odd_k_cout_tail": (1, 3, 7, 9, 5, (3, 3), dict(pads=(1, 1, 1, 1), x_zp=-128, out_zp=5)),
    "pointwise_batch2": (2, 8, 6, 5, 8, (1, 1), dict(x_zp=0, out_zp=-128)),
    "pointwise_k_mod4_1": (1, 13, 3, 4, 11, (1, 1), dict(x_zp=127, out_zp=127, negative=True)),
    "patch_embed_s4": (1, 3, 16, 12, 16, (4, 4), dict(stride=(4, 4), x_zp=-7)),
    "stride2_asym_pads": (1, 4, 9, 8, 6, (3, 3), dict(stride=(2, 2), pads=(1, 0, 2, 1), x_zp=30)),
    "groups2_dil_rect": (1, 4, 8, 9, 6, (3, 2), dict(stride=(1, 2), pads=(2, 1, 0, 1), dil=(2, 1), group=2, x_zp=-3)),
    "dw_multiplier2": (1, 3, 6, 6, 6, (3, 3), dict(pads=(1, 1, 1, 1), group=3, x_zp=127)),
    "wide_k288": (1, 32, 5, 4, 7, (3, 3), dict(pads=(1, 1, 1, 1), x_zp=-128, negative=True)),
    "pad_beyond_kernel": (1, 2, 3, 3, 4, (2, 2), dict(pads=(3, 2, 3, 1), x_zp=100, out_zp=-50)),
    "no_bias_saturating": (1, 5, 5, 5, 9, (3, 3), dict(pads=(1, 1, 1, 1), bias=False, gain=20.0, x_zp=11)),
    "dw3x3_pad1": (2, 6, 7, 8, 6, (3, 3), dict(pads=(1, 1, 1, 1), group=6, x_zp=-128, out_zp=3)),
    "dw3x3_s2_asym": (1, 5, 9, 8, 5, (3, 3), dict(stride=(2, 2), pads=(1, 0, 1, 2), group=5, x_zp=127)),
    "dw5x5_dil2": (1, 4, 11, 10, 4, (5, 5), dict(pads=(4, 4, 4, 4), dil=(2, 2), group=4, x_zp=-9, negative=True)),
    "dw7x7_no_pad": (1, 3, 9, 12, 3, (7, 7), dict(group=3, x_zp=50, gain=8.0)),
    "dw_pad_beyond_kernel": (1, 2, 2, 3, 2, (2, 2), dict(pads=(3, 3, 2, 2), group=2, x_zp=-100)),
    "wild_requant": (1, 6, 5, 5, 23, (3, 3), dict(pads=(1, 1, 1, 1), x_zp=-128, wild=True)),
    "dw_wild_requant": (1, 24, 4, 4, 24, (3, 3), dict(pads=(1, 1, 1, 1), group=24, x_zp=127, wild=True)),
    "pointwise_groups2_tail1": (1, 8, 3, 3, 6, (1, 1), dict(group=2, x_zp=-3, out_zp=9)),  # 9 pixels: 4 + 4 + 1
    "pointwise_s2": (1, 8, 7, 6, 10, (1, 1), dict(stride=(2, 2), x_zp=5)),  # 1×1 but strided: im2col path
    # depthwise padded plane: odd / even widths, stride_w 1, 2 and 3, stride_h ≠ stride_w, no pad, pads beyond
    # the windows, an input wider than the windows need
    "dw3x3_s1_nopad_odd": (1, 4, 6, 9, 4, (3, 3), dict(group=4, x_zp=-128, out_zp=-7)),
    "dw3x3_s2_even_out": (2, 3, 8, 10, 3, (3, 3), dict(stride=(2, 2), pads=(1, 1, 1, 1), group=3, x_zp=40)),
    "dw3x3_s21_pad2": (1, 3, 7, 6, 3, (3, 3), dict(stride=(2, 1), pads=(2, 2, 0, 1), group=3, x_zp=-1)),
    "dw3x3_s3_unused_cols": (1, 2, 8, 11, 2, (3, 3), dict(stride=(3, 3), group=2, x_zp=13, negative=True)),
    "dw3x3_1x1_image": (1, 5, 1, 1, 5, (3, 3), dict(pads=(1, 1, 1, 1), group=5, x_zp=127, out_zp=-128)),
}


@pytest.mark.parametrize("name", list(CONV))
def test_conv2d(lib, name):
    n, c, h, w, cout, kernel, kw = CONV[name]
    check(lib, conv_case(rng_for("conv", name), n, c, h, w, cout, kernel, **kw))


@pytest.mark.parametrize("name", list(CONV))
def test_conv2d_weight16(lib, name):
    """The same with int16 pre-expanded weights (weight NULL; depthwise ignores weight16 and keeps weight)."""
    n, c, h, w, cout, kernel, kw = CONV[name]
    check(lib, conv_case(rng_for("conv", name), n, c, h, w, cout, kernel, wide=True, **kw))


def test_conv2d_detects_a_wrong_multiplier(lib):
    """The comparison can fail: the same call with the multiplier halved gives different bits."""
    case = conv_case(rng_for("conv-wrong"), 1, 4, 6, 6, 8, (3, 3), pads=(1, 1, 1, 1), x_zp=-20)
    p = case.args[0].values
    good = run_ctypes(lib, case)
    assert np.array_equal(good, case.expected.reshape(-1))
    p["mult"] = (p["mult"] // 2).astype(np.int32)
    assert not np.array_equal(run_ctypes(lib, case), case.expected.reshape(-1))
    p["mult"] = (p["mult"] * 2).astype(np.int32)
    p["shift"] = (p["shift"] + 1).astype(np.int32)
    assert not np.array_equal(run_ctypes(lib, case), case.expected.reshape(-1))


# ---- linear / matmul -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows,k,n,kw", [
    (1, 1, 1, dict()),
    (5, 7, 3, dict(x_zp=-128, out_zp=127)),
    (4, 64, 9, dict(x_zp=127, negative=True)),
    (3, 33, 16, dict(x_zp=-5, bias=False)),
    (7, 192, 6, dict(x_zp=0, out_zp=-128)),
    (2, 5, 13, dict(x_zp=60)),
])
def test_linear(lib, rows, k, n, kw):
    check(lib, linear_case(rng_for("linear", rows, k, n), rows, k, n, **kw))
    check(lib, linear_case(rng_for("linear16", rows, k, n), rows, k, n, wide=True, **kw))  # int16 weights


@pytest.mark.parametrize("rows,k,n", [(6, 16, 16), (5, 24, 7), (4, 9, 9), (3, 10, 1)])
def test_linear_in_place(lib, rows, k, n):
    """Token overwriting: y == x when n ≤ k (the header's aliasing contract)."""
    for wide in (False, True):
        case = linear_case(rng_for("linear-ip", rows, k, n), rows, k, n, x_zp=-17, out_zp=4, wide=wide)
        case.alias = 1
        check(lib, case)


@pytest.mark.parametrize("batch,m,k,n,kw", [
    (1, 1, 1, 1, dict()),
    (2, 5, 7, 3, dict(a_zp=-128, b_zp=127)),
    (3, 4, 16, 9, dict(a_bcast=True, a_zp=9, b_zp=-3, out_zp=-128)),
    (2, 6, 13, 8, dict(b_bcast=True, a_zp=127, b_zp=-128, out_zp=127)),
    (4, 3, 1, 5, dict(a_zp=0, b_zp=0)),
    (1, 17, 64, 17, dict(a_zp=0, b_zp=12, out_zp=-20)),
    (2, 9, 49, 16, dict(a_zp=-128, b_zp=0, gain=10.0)),
])
def test_matmul(lib, batch, m, k, n, kw):
    check(lib, matmul_case(rng_for("matmul", batch, m, k, n), batch, m, k, n, **kw))


# ---- elementwise -----------------------------------------------------------------------------------------
BCAST = [((2, 3, 4), (2, 3, 4)), ((4, 5), (5,)), ((2, 1, 7), (1, 6, 1)), ((3,), ()), ((), ()), ((1, 9), (4, 1)),
         ((2, 1, 3, 1, 2, 3), (1, 4, 1, 5, 1, 3)), ((5, 1), (5, 8))]


@pytest.mark.parametrize("i", range(len(BCAST)))
@pytest.mark.parametrize("mode", ["add", "sub", "wild"])
def test_add(lib, i, mode):
    rng = rng_for("add", i, mode)
    sa, sb = BCAST[i]
    zps = [-128, 127, -128] if i % 3 == 0 else None
    check(lib, add_case(rng, sa, sb, pad6=i % 2 == 1, sub=mode == "sub", wild=mode == "wild", zps=zps))


@pytest.mark.parametrize("i", range(len(BCAST)))
@pytest.mark.parametrize("wild", [False, True])
def test_mul(lib, i, wild):
    sa, sb = BCAST[i]
    zps = [127, -128, 127] if i % 3 == 1 else None
    check(lib, mul_case(rng_for("mul", i, wild), sa, sb, pad6=i % 2 == 0, wild=wild, zps=zps))


def requant_extreme_cases(rng) -> list[Case]:
    """Every op that requantizes an int32 sum, with (M, shift) anywhere in int32 × [−31, 30] (INT32_MIN,
    positive shifts, saturating left shifts) and biases at the int32 limits."""
    cases = [linear_case(rng, 3, 19, 23, x_zp=127, wild=True), linear_case(rng, 2, 8, 40, x_zp=-128, wild=True)]
    cases += [matmul_case(rng, 2, 5, 11, 7, a_zp=-128, b_zp=3, out_zp=int(z), wild=True)
              for z in rng.integers(-128, 128, 12)]
    cases += [mul_case(rng, (3, 5), (5,), wild=True) for _ in range(6)]
    cases += [layernorm_case(rng, 3, 40, wild=True), layernorm_case(rng, 2, 2, wild=True)]
    cases += [add_case(rng, (4, 6), (4, 6), wild=True) for _ in range(6)]
    cases += [add_fast_case(rng, t) for t in range(8)]
    cases += [add_table_case(rng, t) for t in range(8)]
    cases += [pool_case(rng, "avg", 1, 2, 6, 6, (3, 3), (1, 1), (1, 1, 1, 1), x_zp=-128, out_zp=int(z), wild=True)
              for z in rng.integers(-128, 128, 6)]
    cases += [reduce_mean_case(rng, (2, 30, 3), (1,), x_zp=127, out_zp=int(z), wild=True)
              for z in rng.integers(-128, 128, 6)]
    return cases


def test_requantization_extremes(lib):
    for case in requant_extreme_cases(rng_for("extremes")):
        check(lib, case)


def add_fast_case(rng, t: int) -> Case:
    """ev_add's SMMULR input scaling (e ∈ [−31, 0], any M but INT32_MIN) on every int8 value of both operands, with
    multipliers at the extremes and random ones; out (M, e) on and off the SMLAL requantization."""
    a = np.arange(-128, 128).astype(np.int8)
    b = rng.permutation(a)
    za, zb, zo = (int(v) for v in rng.integers(-128, 128, 3))
    ms = [int(rng.choice([I32_MAX, I32_MIN + 1, -1, 0, 1, 1 << 30, int(rng.integers(I32_MIN + 1, I32_MAX))]))
          for _ in range(2)]
    sh = [0 if t % 4 == 0 else int(rng.integers(-31, 1)) for _ in range(2)]
    om, osh = wild_mult(rng) if t % 3 == 0 else (int(rng.integers(1 << 30, I32_MAX)), int(rng.integers(-23, -1)))
    ref = K.add(a, za, b, zb, ms[0], sh[0], ms[1], sh[1], om, osh, zo)
    dims, _ = bcast_dims((256,), (256,))
    p = dict(dims=dims, a_zp=za, b_zp=zb, out_zp=zo, a_mult=ms[0], a_shift=sh[0], b_mult=ms[1], b_shift=sh[1],
             out_mult=om, out_shift=osh, table=None)
    return Case("ev_add", [S("ev_add_t", p), In(a), In(b), Out(256)], ref)


def add_table_case(rng, t: int) -> Case:
    """ev_add with codegen's per-input table on every int8 value of both operands: input (M, e) anywhere the
    table allows, out (M, e) across ev_rq2's range (M ≥ 0, e ∈ [−23, −1]), extreme zero points, odd lengths."""
    n = 256 + t % 4
    a = np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, t % 4)]).astype(np.int8)
    b = rng.permutation(a)
    za, zb, zo = [(-128, 127, -128), (127, -128, 127)][t % 2] if t < 4 else (int(v) for v in rng.integers(-128, 128, 3))
    ms = [int(rng.choice([I32_MAX, I32_MIN + 1, -1, 0, 1, 1 << 30, int(rng.integers(I32_MIN + 1, I32_MAX))]))
          for _ in range(2)]
    sh = [int(rng.choice([0, -1, -31, int(rng.integers(-31, 1))])) for _ in range(2)]
    om = int(rng.choice([0, 1, I32_MAX, 1 << 30, int(rng.integers(0, I32_MAX))]))
    osh = int(rng.choice([-1, -23, -18, int(rng.integers(-23, 0))]))
    ref = K.add(a, za, b, zb, ms[0], sh[0], ms[1], sh[1], om, osh, zo)
    table = add_table(za, zb, ms[0], sh[0], ms[1], sh[1], om, osh)
    assert table is not None
    dims, _ = bcast_dims((n,), (n,))
    p = dict(dims=dims, a_zp=za, b_zp=zb, out_zp=zo, a_mult=ms[0], a_shift=sh[0], b_mult=ms[1], b_shift=sh[1],
             out_mult=om, out_shift=osh, table=table)
    return Case("ev_add", [S("ev_add_t", p), In(a), In(b), Out(n)], ref)


def test_add_table(lib):
    rng = rng_for("add-table")
    for t in range(40):
        check(lib, add_table_case(rng, t))
    for i, (sa, sb) in enumerate(BCAST + [((3, 7), (3, 7)), ((2, 5, 3), (2, 5, 3))]):  # broadcast and flat
        check(lib, add_case(rng, sa, sb, pad6=i % 2 == 1, sub=i % 3 == 1, table=True,
                            zps=[127, -128, 127] if i % 4 == 0 else None))
    # out (M, e) off ev_rq2: no table from codegen, and the kernel ignores one
    case = add_case(rng, (4, 9), (4, 9))
    case.args[0].values.update(out_mult=-5, table=np.zeros(512, np.int32))
    case.expected = K.add(case.args[1].a, case.args[0].values["a_zp"], case.args[2].a, case.args[0].values["b_zp"],
                          *(case.args[0].values[k] for k in ("a_mult", "a_shift", "b_mult", "b_shift")), -5,
                          case.args[0].values["out_shift"], case.args[0].values["out_zp"])
    check(lib, case)


def test_add_fast_inputs_exhaustive(lib):
    rng = rng_for("add-fast")
    for t in range(40):
        check(lib, add_fast_case(rng, t))


def test_add_mul_in_place(lib):
    rng = rng_for("add-ip")
    for case in (add_case(rng, (4, 6), (6,)), add_case(rng, (3, 5), (3, 5), sub=True), mul_case(rng, (2, 7), (1,)),
                 add_case(rng, (4, 6), (6,), table=True), add_case(rng, (3, 5), (3, 5), sub=True, table=True)):
        case.alias = 1  # y == a (contiguous)
        check(lib, case)


def test_rescale(lib):
    rng = rng_for("rescale")
    for ratio in (0.01, 0.3, 0.99, 1.0, 1.7, 13.0, -0.6, -4.0):
        (m,), (s,) = mults(ratio)
        check(lib, rescale_case(rng, 301, int(rng.integers(-128, 128)), int(m), int(s), int(rng.integers(-128, 128))))
    for m in (I32_MIN, I32_MAX, -1, 0, 1, 2 ** 30, -(2 ** 30)):
        for s in (-31, -20, -1, 0, 1, 17, 30):
            for zx, zo in ((-128, 127), (127, -128)):
                check(lib, rescale_case(rng, 64, zx, m, s, zo))
    case = rescale_case(rng, 77, 3, *[int(v[0]) for v in mults(0.8)], -2)
    case.alias = 5
    check(lib, case)


def test_lut(lib):
    rng = rng_for("lut")
    table = i8(rng, 256)
    x = np.concatenate([np.arange(-128, 128), rng.integers(-128, 128, 101)]).astype(np.int8)
    ref = K.lut(x, table)
    check(lib, Case("ev_lut", [x.size, In(table), In(x), Out(x.size)], ref))
    check(lib, Case("ev_lut", [x.size, In(table), In(x), Out(x.size)], ref, alias=2))


# ---- softmax / layernorm ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rows,length,scale", [(6, 49, 0.08), (4, 197, 0.02), (3, 1, 0.3), (5, 16, 1.5), (2, 33, 0.0),
                                               (2, 512, 0.0)])  # 512 equal logits: 256·e/S = ½, exact ties
def test_softmax(lib, rows, length, scale):
    check(lib, softmax_case(rng_for("softmax", rows, length), rows, length, scale))


def test_softmax_in_place(lib):
    case = softmax_case(rng_for("softmax-ip"), 5, 31, 0.05)
    case.alias = 3
    check(lib, case)


@pytest.mark.parametrize("rows,length,kw", [
    (10, 96, dict(spread=1.0)),
    (6, 64, dict(spread=0.05)),  # std of a few LSBs
    (4, 768, dict(spread=0.5, out_zp=-128)),
    (3, 1, dict()),
    (5, 7, dict(eps=0.0, out_zp=127)),  # constant row with ε = 0: σ = max(isqrt(0), 1)
    (4, 50, dict(eps=0.5, s_x=0.01)),  # ε dominating σ
    (8, 96, dict(pos=True)),
    (5, 129, dict(pos=True)),  # past the SMMULR path's 128
])
@pytest.mark.parametrize("rq2", [True, False])
def test_layernorm(lib, rows, length, kw, rq2):
    check(lib, layernorm_case(rng_for("ln", rows, length), rows, length, rq2=rq2, **kw))


def ln_negative_ties(x: np.ndarray, eps_q: int) -> np.ndarray:
    """Per row: whether some d = n·x − Σx < 0 has d·R ≡ 2^15 (mod 2^16), where RDBPOT rounds down but SMMULR up."""
    x = x.astype(np.int64)
    n = x.shape[-1]
    total = x.sum(-1, keepdims=True)
    var = S_.div_round((n * (x * x).sum(-1, keepdims=True) - total * total) << K.LN_VAR_BITS, n * n) + eps_q
    recip = S_.div_round(np.int64(1) << 36, n * np.maximum(S_.isqrt(var), 1))
    d = n * x - total
    return ((d < 0) & ((d * recip) % 65536 == 32768)).any(-1)


@pytest.mark.parametrize("length,out_zp", [(96, 0), (128, -128), (20, 127)])
def test_layernorm_rounding_ties(lib, length, out_zp):
    """Rows where the rq2 path's SMMULR would round a negative tie of RDBPOT(d·R, 16) the wrong way (ev_layernorm
    must detect them), mixed with tie-free ones; n = 128 is the longest row of that path."""
    rng = rng_for("ln-ties", length)
    x = np.clip(rng.standard_normal((30000, length)) * rng.uniform(1, 60, (30000, 1)), -128, 127).astype(np.int8)
    eps_q = int(round(1e-5 * 2 ** K.LN_VAR_BITS / 0.05 ** 2))
    ties = ln_negative_ties(x, eps_q)
    assert ties.sum() >= 4
    x = np.concatenate([x[ties][:12], x[~ties][:12]])
    check(lib, layernorm_case(rng, len(x), length, x=x, out_zp=out_zp))
    check(lib, layernorm_case(rng, len(x), length, x=x, out_zp=out_zp, pos=True))
    check(lib, layernorm_case(rng, len(x), length, x=x, out_zp=out_zp, wild=True))


def test_layernorm_in_place(lib):
    case = layernorm_case(rng_for("ln-ip"), 6, 40)
    case.alias = 1
    check(lib, case)


# ---- pooling / reduce_mean -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("shape,kernel,stride,pads,dil", [
    ((1, 4, 8, 8), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)),
    ((2, 3, 7, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    ((1, 2, 5, 6), (3, 2), (1, 2), (2, 0, 1, 1), (2, 1)),
    ((1, 3, 7, 7), (7, 7), (1, 1), (0, 0, 0, 0), (1, 1)),  # global
    ((1, 2, 3, 4), (2, 2), (2, 2), (3, 3, 3, 3), (1, 1)),  # windows wholly in the padding
])
def test_pool(lib, kind, shape, kernel, stride, pads, dil):
    rng = rng_for("pool", kind, shape, kernel)
    if kind == "avg":
        dil = (1, 1)
    check(lib, pool_case(rng, kind, *shape, kernel, stride, pads, dil, x_zp=int(rng.integers(-128, 128)),
                         out_zp=int(rng.integers(-128, 128))))


@pytest.mark.parametrize("shape,axes", [((2, 5, 4, 3), (2, 3)), ((2, 5, 4, 3), (1,)), ((3, 7), (0,)),
                                        ((2, 5, 4, 3), (1, 2)), ((2, 5, 4, 3), (3,)), ((1, 196, 64), (1,))])
def test_reduce_mean(lib, shape, axes):
    rng = rng_for("rm", shape, axes)
    check(lib, reduce_mean_case(rng, shape, axes, x_zp=int(rng.choice([-128, 127, 7])), out_zp=-3))


# ---- data moves ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,perm", [((2, 3, 4, 5), (0, 2, 3, 1)), ((6, 7), (1, 0)), ((2, 3, 4), (0, 1, 2)),
                                        ((1, 4, 2, 3, 2, 2), (5, 3, 1, 0, 2, 4)), ((5,), (0,))])
def test_copy_transpose(lib, shape, perm):
    check(lib, transpose_case(rng_for("tr", shape, perm), shape, perm))


def _copy(lib, x: np.ndarray, x_off: int, view: np.ndarray, y: np.ndarray, y_off: int, y_strides) -> None:
    """ev_copy of `view` (a strided view into x starting x_off elements in) to y at y_off with y_strides."""
    shape = np.array(view.shape, np.int32)
    ins, outs = np.array(view.strides, np.int32), np.array(y_strides, np.int32)
    ptr = ctypes.c_void_p
    lib.ev_copy(ctypes.c_int32(view.ndim), ptr(shape.ctypes.data), ptr(ins.ctypes.data), ptr(outs.ctypes.data),
                ptr(x.ctypes.data + x_off), ptr(y.ctypes.data + y_off))


def _offset(view: np.ndarray, base: np.ndarray) -> int:
    return view.__array_interface__["data"][0] - base.__array_interface__["data"][0]


def test_copy_slice_split_concat(lib):
    rng = rng_for("moves")
    x = i8(rng, (2, 6, 5, 7))
    # slice with steps
    view = x[:, 1:5:2, ::3, 2:]
    y = np.zeros(view.size, np.int8)
    _copy(lib, x, _offset(view, x), view, y, 0, np.ascontiguousarray(view).strides)
    assert np.array_equal(y.reshape(view.shape), view)
    # split along channels, then concat back along channels
    parts = [x[:, :2], x[:, 2:3], x[:, 3:]]
    outs = []
    for part in parts:
        out = np.zeros(part.shape, np.int8)
        _copy(lib, x, _offset(part, x), part, out, 0, out.strides)
        outs.append(out)
        assert np.array_equal(out, part)
    y = np.zeros(x.shape, np.int8)
    c0 = 0
    for out in outs:
        _copy(lib, out, 0, out, y, _offset(y[:, c0:], y), y.strides)
        c0 += out.shape[1]
    assert np.array_equal(y, x)
    # concat along the last axis (strided destination rows)
    a, b = i8(rng, (3, 4, 5)), i8(rng, (3, 4, 2))
    y = np.zeros((3, 4, 7), np.int8)
    _copy(lib, a, 0, a, y, 0, y.strides)
    _copy(lib, b, 0, b, y, 5, y.strides)
    assert np.array_equal(y, np.concatenate([a, b], -1))


@pytest.mark.parametrize("shape,axis,idx", [((3, 7, 4), 1, [0, 6, 2, 2, -1]), ((5, 9), 0, [4, 0]),
                                            ((2, 3, 10), 2, [9, -10, 5]), ((197, 64), 0, [0])])
def test_gather(lib, shape, axis, idx):
    x = i8(rng_for("gather", shape, axis), shape)
    idx = np.array(idx, np.int32)
    ref = np.take(x, idx, axis=axis)
    outer, axis_len, inner = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))
    check(lib, Case("ev_gather", [outer, axis_len, inner, In(idx), idx.size, In(x), Out(ref.size)], ref))


# ---- C driver: the same cases compiled into a standalone program (host sanitizers, Cortex-M7 in QEMU) ------
C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.uint16): "uint16_t", np.dtype(np.int32): "int32_t",
           np.dtype(np.int64): "int64_t", np.dtype(np.int16): "int16_t"}


def _lit(v: int, wide=False) -> str:
    v = int(v)
    if wide:
        return f"{v}LL"
    return "(-2147483647 - 1)" if v == I32_MIN else str(v)


def _array(name: str, a: np.ndarray) -> str:
    body = ",".join(_lit(v) for v in a.reshape(-1)) or "0"
    return f"static const {C_TYPES[a.dtype]} {name}[] __attribute__((aligned(4))) = {{{body}}};\n"


def _struct_init(tname: str, values: dict, prefix: str, decls: list) -> str:
    parts = []
    for fname, kind in _fields(STRUCTS[tname]):
        v = values[fname]
        if kind == "ptr":
            if v is None:
                parts.append(f".{fname} = 0")
            else:
                decls.append(_array(f"{prefix}_{fname}", np.ascontiguousarray(v)))
                parts.append(f".{fname} = {prefix}_{fname}")
        elif kind == "arr6":
            parts.append(f".{fname} = {{{', '.join(_lit(x) for x in v)}}}")
        elif kind in STRUCTS:
            parts.append(f".{fname} = {_struct_init(kind, v, prefix + '_' + fname, decls)}")
        else:
            parts.append(f".{fname} = {_lit(v, kind == 'i64')}")
    return "{" + ", ".join(parts) + "}"


def driver_source(cases: list[Case]) -> str:
    """main() runs every case once, prints `cI <hex>` lines (output bytes) and `cI GUARD` on overruns."""
    decls, body = [], []
    for i, case in enumerate(cases):
        p, args, out_n = f"c{i}", [], case.out_size
        for j, a in enumerate(case.args):
            if isinstance(a, S):
                init = _struct_init(a.type, a.values, f"{p}_p{j}", decls)  # declares the struct's arrays first
                decls.append(f"static const {a.type} {p}_p{j} = {init};\n")
                args.append(f"&{p}_p{j}")
            elif isinstance(a, In):
                decls.append(_array(f"{p}_a{j}", np.ascontiguousarray(a.a)))
                args.append(f"{p}_a{j} + {a.offset}")
            elif isinstance(a, Out):
                decls.append(f"static int8_t {p}_y[{out_n} + GUARD];\n")
                args.append(f"{p}_y")
            elif isinstance(a, Scratch):
                decls.append(f"static int16_t {p}_s[{a.nbytes // 2} + GUARD / 2] "
                             "__attribute__((aligned(8)));\n")
                args.append(f"{p}_s")
                body.append(f"    memset({p}_s, 0x5A, sizeof {p}_s);\n")
                scratch_used = a.nbytes
            else:
                args.append(_lit(a))
        body.append(f"    memset({p}_y, 0x5A, sizeof {p}_y);\n")
        body.append(f"    {case.fn}({', '.join(args)});\n")
        body.append(f"    dump(\"{p}\", {p}_y, {out_n});\n")
        body.append(f"    if (!untouched((const uint8_t *){p}_y + {out_n}, GUARD)) put(\"{p} GUARD\\n\");\n")
        if any(isinstance(a, Scratch) for a in case.args):
            body.append(f"    if (!untouched((const uint8_t *){p}_s + {scratch_used}, GUARD)) "
                        f"put(\"{p} GUARD\\n\");\n")
    body.append("    if (requant_selftest()) put(\"selftest FAIL\\n\");\n")
    return DRIVER_HEAD + "".join(decls) + "\nint main(void) {\n" + "".join(body) + \
        "    put(\"done\\n\");\n    return 0;\n}\n"


DRIVER_HEAD = r"""#include <stdint.h>
#include <string.h>
#include "ev_kernels.h"
#include "ev_common.h" /* private: the fast requantization is checked against the header's */

#if defined(__arm__)
#define GUARD 16 /* bytes after outputs and scratch that must stay 0x5A */
static void put(const char *s) { /* semihosting SYS_WRITE0 */
    register uint32_t r0 __asm__("r0") = 0x04;
    register const char *r1 __asm__("r1") = s;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
}
#else
#include <stdio.h>
#define GUARD 0 /* AddressSanitizer's redzones start right after each buffer: over-reads fail too */
static void put(const char *s) { fputs(s, stdout); }
#endif

static int untouched(const uint8_t *p, int n) {
    for (int i = 0; i < n; i++)
        if (p[i] != 0x5A) return 0;
    return 1;
}

static uint32_t rnd(uint32_t *st) { /* xorshift32 (an LCG's low bits would cycle with period 4) */
    uint32_t x = *st;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *st = x;
}

static int32_t pick(uint32_t *st) { /* int32 limits, full range or small, a quarter / quarter / half */
    static const int32_t special[8] = {INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX, 1 << 30, -(1 << 30)};
    const uint32_t r = rnd(st);
    if ((r & 3) == 0) return special[(r >> 2) & 7];
    if ((r & 3) == 1) return (int32_t)rnd(st);
    return (int32_t)rnd(st) / (int32_t)(1 + ((r >> 2) & 0xFFFF));
}

static int requant_selftest(void) { /* ev_common.h's requantizations == the header's, 300 000 random cases */
    uint32_t st = 2024;
    int bad = 0;
    for (int32_t i = 0; i < 300000; i++) {
        const int32_t sum = pick(&st), bias = pick(&st), mult = pick(&st);
        const uint32_t r = rnd(&st);
        const int32_t shift = (r & 3) == 0 ? -(int32_t)((r >> 2) & 1) : (int32_t)((r >> 2) % 62u) - 31;
        const int32_t zp = (int32_t)((r >> 8) & 255u) - 128;
        const int fast = ev_fast_ok(mult, shift);
        bad += ev_requant(fast, sum, bias, mult, shift, zp) != ev_requantize((int64_t)sum + bias, mult, shift, zp);
        if (fast) bad += ev_mbqm32_fast(sum, mult, shift) != ev_mbqm(sum, mult, shift);
        if (ev_rq_ok(mult, shift)) /* the SMLAL requantization of conv2d / linear / matmul */
            bad += ev_rq(ev_sat_add(sum, bias), ev_rq_make(mult, shift, zp)) !=
                   ev_requantize((int64_t)sum + bias, mult, shift, zp);
        if (ev_rq2_ok(mult, shift)) /* the SMMLAR one of the 2 × 4 kernel, from doubled sums within ±2^29 */
            bad += ev_rq2(2 * (sum >> 3), ev_rq2_make(mult, shift, zp)) != ev_requantize(sum >> 3, mult, shift, zp);
        bad += ev_clamp8_sum3(sum, bias, zp) != ev_clamp8((int64_t)sum + bias + zp);
    }
    return bad;
}

static void dump(const char *tag, const int8_t *y, int n) { /* "tag hex…\n" in chunks of 256 bytes */
    static char buf[16 + 2 * 256 + 2];
    static const char hex[] = "0123456789abcdef";
    for (int at = 0; at < n; at += 256) {
        int k = 0;
        for (const char *t = tag; *t; t++) buf[k++] = *t;
        buf[k++] = ' ';
        for (int i = at; i < n && i < at + 256; i++) {
            buf[k++] = hex[(uint8_t)y[i] >> 4];
            buf[k++] = hex[(uint8_t)y[i] & 15];
        }
        buf[k++] = '\n';
        buf[k] = 0;
        put(buf);
    }
}

"""


def check_driver_output(stdout: str, cases: list[Case]) -> None:
    got: dict[str, str] = {}
    lines = stdout.strip().splitlines()
    assert lines and lines[-1] == "done", stdout[-2000:]
    assert "selftest FAIL" not in lines, "fast requantization differs from ev_requantize"
    for line in lines[:-1]:
        tag, _, rest = line.partition(" ")
        assert rest != "GUARD", f"{tag}: wrote past its output or scratch"
        got[tag] = got.get(tag, "") + rest
    for i, case in enumerate(cases):
        out = np.frombuffer(bytes.fromhex(got[f"c{i}"]), np.int8)
        exp = case.expected.reshape(-1)
        assert np.array_equal(out, exp), (f"c{i}", case.fn, np.flatnonzero(out != exp)[:10])


def dw_bias_edge_case(rng) -> Case:
    """Depthwise 3×3 with biases right at and just past the limit where sum + bias could saturate (the SIMD path
    starts the sum at the bias only below it)."""
    case = conv_case(rng, 1, 8, 5, 7, 8, (3, 3), pads=(1, 1, 1, 1), group=8, x_zp=-128, negative=True)
    p = case.args[0].values
    wq = p["weight"].astype(np.int64)
    bound = 255 * np.abs(wq).reshape(8, -1).sum(1)
    b = np.array([I32_MAX - bound[0], I32_MAX - bound[1] + 1, I32_MIN + bound[2], I32_MIN + bound[3] - 1,
                  I32_MAX, I32_MIN, 0, -5], np.int64).astype(np.int32)
    p["bias"] = b
    x = case.args[1].a
    case.expected = K.conv2d(x, -128, p["weight"], b, p["mult"], p["shift"], 0, (1, 1), (1, 1, 1, 1), (1, 1), 8)
    return case



def dw_lim_case(rng) -> Case:
    """Depthwise 3×3 with biases at and just past ±(2^29 − 1 − 255·128·9), where the SIMD path (doubled sum,
    SMMLAR requantization) hands over to the exact one."""
    case = conv_case(rng, 1, 4, 5, 6, 4, (3, 3), pads=(1, 1, 1, 1), group=4, x_zp=-128, negative=True)
    p = case.args[0].values
    lim = (1 << 29) - 1 - 255 * 128 * 9
    b = np.array([lim, lim + 1, -lim, -lim - 1], np.int64).astype(np.int32)
    p["bias"] = b
    case.expected = K.conv2d(case.args[1].a, -128, p["weight"], b, p["mult"], p["shift"], 0, (1, 1), (1, 1, 1, 1),
                             (1, 1), 4)
    return case

def simd_cases() -> list[Case]:
    """conv2d (4-pixel blocks + short last blocks, odd receptive fields, pointwise), depthwise, linear (4-row
    blocks + tails), matmul (4-column blocks + tails, odd k)."""
    rng = rng_for("simd")
    cases = [
        conv_case(rng, 1, 3, 7, 9, 5, (3, 3), pads=(1, 1, 1, 1), x_zp=-128, out_zp=5),
        conv_case(rng, 1, 16, 6, 5, 12, (1, 1), x_zp=127, negative=True),
        conv_case(rng, 1, 4, 8, 9, 6, (3, 2), stride=(1, 2), pads=(2, 1, 0, 1), dil=(2, 1), group=2, x_zp=-3),
        conv_case(rng, 1, 32, 5, 4, 7, (3, 3), pads=(1, 1, 1, 1), x_zp=-128, gain=10.0),
        conv_case(rng, 1, 3, 16, 12, 8, (4, 4), stride=(4, 4), x_zp=9),
        conv_case(rng, 2, 6, 7, 8, 6, (3, 3), pads=(1, 1, 1, 1), group=6, x_zp=-128),
        conv_case(rng, 1, 5, 9, 8, 5, (5, 5), stride=(2, 2), pads=(2, 1, 2, 2), dil=(1, 2), group=5, x_zp=127),
        linear_case(rng, 5, 7, 3, x_zp=-128, out_zp=127),
        linear_case(rng, 4, 64, 9, x_zp=127, negative=True),
        linear_case(rng, 3, 37, 18, x_zp=-5, bias=False),
        linear_case(rng, 2, 200, 4, x_zp=0),
        matmul_case(rng, 2, 5, 7, 3, a_zp=-128, b_zp=127),
        matmul_case(rng, 3, 4, 16, 9, a_bcast=True, a_zp=9, b_zp=-3, out_zp=-128),
        matmul_case(rng, 2, 6, 13, 8, b_bcast=True, a_zp=127, b_zp=-128),
        matmul_case(rng, 1, 17, 64, 17, a_zp=0, b_zp=12),
        matmul_case(rng, 2, 3, 1, 5),
        conv_case(rng, 1, 6, 5, 5, 23, (3, 3), pads=(1, 1, 1, 1), x_zp=-128, wild=True),
        conv_case(rng, 1, 24, 4, 4, 24, (3, 3), pads=(1, 1, 1, 1), group=24, x_zp=127, wild=True),
        # pointwise: 4 adjacent pixels transposed with SXTB16 + halfword packing, then 3 and 1 pixel tails
        conv_case(rng, 1, 20, 3, 5, 9, (1, 1), x_zp=-100, out_zp=7),
        conv_case(rng, 1, 8, 3, 3, 6, (1, 1), group=2, x_zp=-3),
        linear_case(rng, 7, 44, 5, x_zp=3),  # k ≡ 4 mod 8: the dot's single 4-step after the unrolled pairs
        # depthwise 3×3 SMLAD paths: stride_w 1 (pairs sharing a word, odd last output) and 2, stride_h 2,
        # no padding, a 1-pixel image, saturation-free biases near the int32 limits (the sum starts at the bias)
        conv_case(rng, 1, 4, 6, 9, 4, (3, 3), group=4, x_zp=-128, out_zp=-7),
        conv_case(rng, 2, 3, 8, 10, 3, (3, 3), stride=(2, 2), pads=(1, 1, 1, 1), group=3, x_zp=40),
        conv_case(rng, 1, 3, 9, 9, 3, (3, 3), stride=(2, 2), pads=(1, 1, 1, 1), group=3, x_zp=-100, negative=True),
        conv_case(rng, 1, 3, 7, 6, 3, (3, 3), stride=(2, 1), pads=(2, 2, 0, 1), group=3, x_zp=-1, gain=8.0),
        conv_case(rng, 1, 5, 1, 1, 5, (3, 3), pads=(1, 1, 1, 1), group=5, x_zp=127, out_zp=-128),
        conv_case(rng, 1, 16, 16, 16, 16, (3, 3), pads=(1, 1, 1, 1), group=16, x_zp=-128, out_zp=50),
        dw_bias_edge_case(rng),
        dw_lim_case(rng),
        # int16 pre-expanded weights (EV_WEIGHT16): k = 27 (odd: padded rows), 16 (pointwise), 288, 44 (≡ 4 mod 8),
        # 37 (≡ 1 mod 4), 6 (≡ 2 mod 4), 200; a depthwise conv that must ignore weight16
        conv_case(rng, 1, 3, 7, 9, 5, (3, 3), pads=(1, 1, 1, 1), x_zp=-128, out_zp=5, wide=True),
        conv_case(rng, 1, 16, 6, 5, 12, (1, 1), x_zp=127, negative=True, wide=True),
        conv_case(rng, 1, 32, 5, 4, 7, (3, 3), pads=(1, 1, 1, 1), x_zp=-128, gain=10.0, wide=True),
        conv_case(rng, 1, 4, 8, 9, 6, (3, 2), stride=(1, 2), pads=(2, 1, 0, 1), dil=(2, 1), group=2, x_zp=-3,
                  wide=True),
        conv_case(rng, 1, 6, 5, 5, 23, (3, 3), pads=(1, 1, 1, 1), x_zp=-128, wild=True, wide=True),
        conv_case(rng, 2, 6, 7, 8, 6, (3, 3), pads=(1, 1, 1, 1), group=6, x_zp=-128, wide=True),
        linear_case(rng, 7, 44, 5, x_zp=3, wide=True),
        linear_case(rng, 3, 37, 18, x_zp=-5, bias=False, wide=True),
        linear_case(rng, 5, 7, 3, x_zp=-128, out_zp=127, wide=True),
        linear_case(rng, 2, 200, 4, x_zp=0, wide=True),
        linear_case(rng, 4, 6, 9, x_zp=127, negative=True, wide=True),
        # 3-wide kernels' row order (EV_WEIGHT16): word loads inside, masked words and taps at the borders, 5 and
        # 3 kernel rows per group (odd middles), dilations, an odd channel count per group, a 1×3 kernel
        conv_case(rng, 1, 5, 9, 8, 6, (3, 3), stride=(2, 2), pads=(1, 1, 1, 1), x_zp=-3, wide=True),
        conv_case(rng, 1, 3, 8, 7, 4, (3, 3), pads=(2, 0, 1, 2), dil=(2, 1), x_zp=90, out_zp=-9, wide=True),
        conv_case(rng, 1, 2, 6, 9, 3, (3, 3), pads=(1, 2, 1, 2), dil=(1, 2), x_zp=-128, wide=True),
        conv_case(rng, 1, 4, 7, 6, 6, (3, 3), pads=(1, 1, 1, 1), group=2, x_zp=5, wide=True),
        conv_case(rng, 2, 7, 3, 9, 5, (1, 3), stride=(1, 2), pads=(0, 1, 0, 0), x_zp=-60, wide=True),
        conv_case(rng, 1, 1, 2, 1, 2, (3, 3), pads=(1, 1, 1, 1), x_zp=17, wide=True),
        # kw a multiple of 4: a kernel row's blocks read as words inside, tap by tap at the borders
        conv_case(rng, 1, 3, 16, 12, 8, (4, 4), stride=(4, 4), x_zp=9, wide=True),
        conv_case(rng, 1, 2, 9, 10, 6, (2, 4), stride=(2, 2), pads=(1, 1, 2, 1), x_zp=-77, wide=True),
        # matmul with b packed undoubled for a requantization other than ev_rq2's
        matmul_case(rng, 2, 5, 14, 11, a_zp=3, b_zp=-7, wild=True),
        matmul_case(rng, 1, 6, 9, 8, a_zp=-128, b_zp=127, out_zp=5, wild=True),
    ]
    return cases


def all_op_cases() -> list[Case]:
    """One or two cases of every other kernel, for the host sanitizer run."""
    rng = rng_for("asan")
    x = i8(rng, 300)
    table = i8(rng, 256)
    idx = np.array([3, -1, 0], np.int32)
    g = i8(rng, (2, 5, 3))
    return [
        add_case(rng, (2, 1, 7), (1, 6, 1)), add_case(rng, (3, 4), (4,), wild=True), mul_case(rng, (5, 1), (5, 8)),
        # add's SMMULR path over a flat loop (same shapes), n = 0 and n ≥ 1 input shifts, extreme zero points
        add_case(rng, (3, 40), (3, 40)), add_case(rng, (2, 5, 8), (2, 5, 8), sub=True),
        add_case(rng, (7, 9), (7, 9), zps=[-128, 127, -128]), add_case(rng, (6, 7), (6, 7), zps=[127, -128, 127]),
        rescale_case(rng, 37, -128, I32_MIN, 30, 127),
        Case("ev_lut", [x.size, In(table), In(x), Out(x.size)], K.lut(x, table)),
        softmax_case(rng, 5, 49, 0.08), layernorm_case(rng, 4, 96), layernorm_case(rng, 3, 1),
        pool_case(rng, "avg", 1, 3, 7, 9, (3, 3), (2, 2), (1, 1, 1, 1), x_zp=-128),
        pool_case(rng, "max", 1, 2, 5, 6, (3, 2), (1, 2), (2, 0, 1, 1), (2, 1)),
        pool_case(rng, "avg", 1, 2, 3, 4, (2, 2), (2, 2), (3, 3, 3, 3)),
        reduce_mean_case(rng, (2, 5, 4, 3), (1, 2), x_zp=127), transpose_case(rng, (2, 3, 4, 5), (0, 2, 3, 1)),
        Case("ev_gather", [2, 5, 3, In(idx), 3, In(g), Out(18)], np.take(g, idx, axis=1)),
        add_case(rng, (5, 1, 7), (5, 3, 7), table=True), add_case(rng, (3, 41), (3, 41), sub=True, table=True),
        Case("ev_lut", [x.size - 3, In(table), In(x, 3), Out(x.size - 3)], K.lut(x[3:], table)),
        *copy_cases(rng),
    ]


def test_host_driver_under_sanitizers(tmp_path):
    """Every kernel once more as a standalone program with AddressSanitizer + UBSan (reads out of bounds,
    signed overflow, bad shifts abort it)."""
    if not shutil.which("gcc"):
        pytest.skip("gcc missing")
    cases = simd_cases() + all_op_cases() + requant_extreme_cases(rng_for("extremes-host"))
    (tmp_path / "driver.c").write_text(driver_source(cases))
    exe = tmp_path / "driver"
    flags = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", *WARN, "-I", str(KDIR)]
    proc = subprocess.run(["gcc", *flags, str(tmp_path / "driver.c"), *map(str, SOURCES), "-o", str(exe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_driver_output(proc.stdout, cases)


# ---- Cortex-M ------------------------------------------------------------------------------------------
ARM_GCC = shutil.which("arm-none-eabi-gcc")
needs_arm_gcc = pytest.mark.skipif(ARM_GCC is None, reason="arm-none-eabi-gcc missing")


@needs_arm_gcc
@pytest.mark.parametrize("cpu", list(ARM_CPUS))
def test_cortex_m_build(tmp_path, cpu):
    """-Werror for M7 and M4 (DSP path), and the objects need nothing but memcpy/memset and libgcc helpers."""
    objs = []
    for src in SOURCES:
        obj = tmp_path / (src.stem + ".o")
        proc = subprocess.run([ARM_GCC, *WARN, "-O2", *ARM_CPUS[cpu], *ARM_FLAGS, "-I", str(KDIR), "-c", str(src),
                               "-o", str(obj)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        objs.append(str(obj))
    nm = subprocess.run(["arm-none-eabi-nm", "-u", *objs], capture_output=True, text=True, check=True).stdout
    undefined = {line.split()[-1] for line in nm.splitlines() if line.strip().startswith("U ")}
    defined = subprocess.run(["arm-none-eabi-nm", "--defined-only", *objs], capture_output=True, text=True,
                             check=True).stdout
    undefined -= {line.split()[-1] for line in defined.splitlines() if len(line.split()) == 3}  # ours, in another file
    assert all(s in {"memcpy", "memset"} or s.startswith("__aeabi_") for s in undefined), undefined
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", objs[[p.name for p in SOURCES].index("ev_conv.c")]],
                         capture_output=True, text=True, check=True).stdout
    assert "smlad" in dis and "sxtb16" in dis  # the DSP path was compiled in


STARTUP = r"""#include <stdint.h>
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

static void sh_exit(int code) { /* semihosting SYS_EXIT_EXTENDED: QEMU exits with `code` */
    uint32_t block[2] = {0x20026, (uint32_t)code};
    register uint32_t r0 __asm__("r0") = 0x20;
    register uint32_t *r1 __asm__("r1") = block;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    for (;;) {}
}

void Reset_Handler(void) {
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;) *dst++ = 0;
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20; /* CPACR: FPU on before any FP instruction */
    __asm__ volatile("dsb\n isb");
    sh_exit(main());
}

void HardFault_Handler(void) { sh_exit(98); }
void Default_Handler(void) { sh_exit(99); }

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Default_Handler, HardFault_Handler, HardFault_Handler,
    HardFault_Handler, HardFault_Handler, 0, 0, 0, 0, Default_Handler, Default_Handler, 0, Default_Handler,
    Default_Handler};
"""

LINKER = """ENTRY(Reset_Handler)
MEMORY { FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 1024K
         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 320K }
_estack = ORIGIN(RAM) + LENGTH(RAM);
SECTIONS {
  .isr_vector : { KEEP(*(.isr_vector)) } > FLASH
  .text : { *(.text*) *(.rodata*) . = ALIGN(4); } > FLASH
  .ARM.exidx : { *(.ARM.exidx*) } > FLASH
  _sidata = LOADADDR(.data);
  .data : { _sdata = .; *(.data*) . = ALIGN(4); _edata = .; } > RAM AT > FLASH
  .bss (NOLOAD) : { _sbss = .; *(.bss*) *(COMMON) . = ALIGN(4); _ebss = .; } > RAM
}
"""


@needs_arm_gcc
@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm missing")
@pytest.mark.parametrize("opt", ["-O2", "-Os"])
def test_simd_path_in_qemu_cortex_m7(tmp_path, opt):
    """The __ARM_FEATURE_DSP code (SXTB16/SMLAD dot products, SSUB16 row expansion, QADD/SSAT requantization)
    bit-exact on a Cortex-M7 — and every other kernel once, built for the target."""
    cases = simd_cases() + all_op_cases() + requant_extreme_cases(rng_for("extremes-m7"))
    (tmp_path / "driver.c").write_text(driver_source(cases))
    (tmp_path / "startup.c").write_text(STARTUP)
    (tmp_path / "m.ld").write_text(LINKER)
    elf = tmp_path / "m.elf"
    proc = subprocess.run([ARM_GCC, *WARN, opt, *ARM_CPUS["cortex-m7"], *ARM_FLAGS, "-I", str(KDIR),
                           "-nostartfiles", "-specs=nano.specs", "-T", str(tmp_path / "m.ld"), "-Wl,--gc-sections",
                           str(tmp_path / "startup.c"), str(tmp_path / "driver.c"), *map(str, SOURCES),
                           "-o", str(elf)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cmd = ["timeout", "60", "qemu-system-arm", "-M", "mps2-an500", "-display", "none", "-monitor", "none",
           "-serial", "none", "-chardev", "stdio,id=sh0", "-semihosting-config", "enable=on,target=native,chardev=sh0",
           "-kernel", str(elf)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    check_driver_output(proc.stdout, cases)
