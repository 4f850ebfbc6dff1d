/* edgevit int8 kernels for microcontrollers — the C side of edgevit/quant/integer_ops.py.
 *
 * Every kernel reproduces its numpy reference in integer_ops.py bit for bit (the tests in
 * tests/backends/mcu/test_kernels.py compare them on random data). Activations are int8, contiguous,
 * row-major (NCHW for images, (..., tokens, channels) for token tensors) unless strides are given.
 * Weights, biases, multipliers, shifts and tables are const (in flash). No malloc, no float.
 *
 * On Cortex-M cores with the DSP extension (__ARM_FEATURE_DSP: M4, M7, M33…) the dot-product loops use
 * ACLE SIMD intrinsics (__smlad, __sxtb16); elsewhere a portable C loop computes the same sums.
 *
 * Scratch: kernels that take `int16_t *scratch` need (4-byte aligned) at least, with k2 = k rounded up to even
 *   conv2d  8 · k2 + 4 · (c/group) · kh bytes (k = (c/group) · kh · kw)   linear  8 · k2 bytes
 *   matmul  ceil(n/2) · (4 · k2 + 32) + 8 · k2 bytes
 *   depthwise conv2d (group == c == cout)  PH · PW bytes, PH = (oh − 1)·stride_h + (kh − 1)·dil_h + 1,
 *                                          PW = ((ow − 1)·stride_w + (kw − 1)·dil_w + 5) rounded down to 4
 * (EV_*_SCRATCH_BYTES below; four pixels / rows / columns as int16 at once, conv2d also its int32 kernel
 * row offsets, matmul all of b as EV_WEIGHT16 pair blocks; depthwise one zero-point-padded channel plane); the
 * memory planner reserves it in the arena for the op's duration.
 *
 * Aliasing (what the planner may do):
 *   lut, rescale, softmax, layernorm: y may equal x (in place).
 *   add, mul: y may equal an operand whose strides are the output's contiguous strides.
 *   linear (token overwriting): rows are processed in order, in blocks of 4 (i .. i+3, i a multiple of 4):
 *     the block's rows of x are read completely (into scratch) before any of its rows of y is written, so row i of x is always read
 *     before row i of y is written and y may overlap x as long as row i of y ends at or below the start
 *     of row i+1 of x: y + (i+1)·n <= x + (i+1)·k for every i < rows − 1 (y == x when n <= k).
 *   everything else: y must not overlap any input.
 */
#ifndef EV_KERNELS_H
#define EV_KERNELS_H

#include <stdint.h>

#define EV_MAX_RANK 6
#define EV_CONV2D_SCRATCH_BYTES(cg, kh, kw) (8 * EV_WEIGHT16_ROW((cg) * (kh) * (kw)) + 4 * (cg) * (kh))
#define EV_LINEAR_SCRATCH_BYTES(k) (8 * EV_WEIGHT16_ROW(k))
#define EV_MATMUL_SCRATCH_BYTES(k, n) (((n) + 1) / 2 * (4 * EV_WEIGHT16_ROW(k) + 32) + 8 * EV_WEIGHT16_ROW(k))
#define EV_DEPTHWISE_SCRATCH_BYTES(oh, ow, kh, kw, sh, sw, dh, dw) \
    (((oh) - 1) * (sh) + ((kh) - 1) * (dh) + 1) * ((((ow) - 1) * (sw) + ((kw) - 1) * (dw) + 5) & ~3)

/* ---- requantization (scheme.py: multiply_by_quantized_multiplier, requantize) ------------------- */
static inline int32_t ev_sat32(int64_t x) {
    return x > INT32_MAX ? INT32_MAX : x < INT32_MIN ? INT32_MIN : (int32_t)x;
}
/* saturating rounding doubling high multiply (gemmlowp) */
static inline int32_t ev_srdhm(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    return (int32_t)((ab + nudge) / (1LL << 31)); /* C division truncates toward zero, as the spec */
}
/* rounding divide by 2^n, ties away from zero (arithmetic >> as in the spec) */
static inline int64_t ev_rdbpot64(int64_t x, int n) {
    int64_t mask = (((int64_t)1) << n) - 1;
    int64_t threshold = (mask >> 1) + (x < 0);
    return (x >> n) + ((x & mask) > threshold);
}
static inline int32_t ev_mbqm(int64_t x, int32_t mult, int32_t shift) {
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    return (int32_t)ev_rdbpot64(ev_srdhm(ev_sat32(x * (((int64_t)1) << left)), mult), right);
}
static inline int8_t ev_clamp8(int64_t v) { return (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v); }
static inline int8_t ev_requantize(int64_t acc, int32_t mult, int32_t shift, int32_t zp) {
    return ev_clamp8((int64_t)ev_mbqm(acc, mult, shift) + zp);
}

/* ---- ops (integer_ops.py names) ------------------------------------------------------------------ */
/* EV_WEIGHT16: conv2d / linear weights pre-expanded to int16, doubled, by pairs of output channels, with their
 * requantization constants (about twice the flash of int8 weights; the dot loop loads both channels' weights
 * with one LDRD, and starting at 2·bias lets the requantization take 5 instructions). Each output's row of
 * k = (c/group)·kh·kw (conv2d) or k (linear) values w[0..k) is taken in steps of 2 values: per block of 4
 * values (w0, w2) and (w1, w3), then the k % 4 tail as (w0, w1) and an odd last value as (w0, 0) —
 * EV_WEIGHT16_ROW(k) values. Conv2d with kw == 3 takes its kernel rows (ci, ky) of 3 instead, by groups of 4
 * (fewer in the last group): each row's (w0, w2), then the group's w1 by twos (an odd one as (w1, 0)), so a
 * row of the input is one word load. Per pair of output channels (2c, 2c+1) of a group (a group with an odd
 * count ends with its last channel and a zero one), 2·EV_WEIGHT16_ROW(k) + 16 int16:
 *   int32 2·bias[2c], 2·bias[2c+1];  per step 2·w_2c's pair, 2·w_2c+1's pair;
 *   int32 M, 2^(n−1) + out_zp·2^n, n (n = −shift) of channel 2c, then of 2c+1 (zeros if M < 0 or n ∉ [1, 23])
 * so it is built from the layer's bias, mult, shift and out_zp too (codegen.weight16_layout). Needs k ≤ 32768
 * (the doubled sums fit int32); the array must be 4-byte aligned. When weight16 is set the kernel reads it
 * instead of weight (which may then be NULL); depthwise conv2d (group == c == cout) ignores weight16 and needs
 * weight. */
#define EV_WEIGHT16_ROW(k) (((k) + 1) & ~1)

typedef struct {
    int32_t n, c, h, w;            /* input (N, C, H, W) */
    int32_t cout, oh, ow;          /* output (N, cout, oh, ow) */
    int32_t kh, kw, stride_h, stride_w, pad_t, pad_l, dil_h, dil_w, group;
    int32_t x_zp, out_zp;
    const int8_t *weight;          /* (cout, c/group, kh, kw) */
    const int32_t *bias, *mult, *shift; /* per output channel */
    const int16_t *weight16;       /* optional (NULL: unused), not for depthwise: EV_WEIGHT16 layout of weight */
} ev_conv2d_t;
void ev_conv2d(const ev_conv2d_t *p, const int8_t *x, int8_t *y, int16_t *scratch);
/* its depthwise path (group == c == cout), in ev_depthwise.c; `plane` is the scratch (EV_DEPTHWISE_SCRATCH_BYTES) */
void ev_conv2d_depthwise(const ev_conv2d_t *p, const int8_t *x, int8_t *y, int8_t *plane);

typedef struct {
    int32_t rows, k, n;            /* x (rows, k) → y (rows, n) */
    int32_t x_zp, out_zp;
    const int8_t *weight;          /* (n, k): the TRANSPOSE of integer_ops' (k, n), so rows are contiguous */
    const int32_t *bias, *mult, *shift; /* per output column n */
    const int16_t *weight16;       /* optional (NULL: unused): EV_WEIGHT16 layout of weight */
} ev_linear_t;
void ev_linear(const ev_linear_t *p, const int8_t *x, int8_t *y, int16_t *scratch);

typedef struct {
    int32_t batch, m, k, n;        /* a (batch, m, k) @ b (batch, k, n) → y (batch, m, n), y contiguous */
    int32_t a_batch_stride, b_batch_stride; /* elements between batches; 0 broadcasts that operand */
    int32_t a_zp, b_zp, out_zp, mult, shift;
} ev_matmul_t;
void ev_matmul(const ev_matmul_t *p, const int8_t *a, const int8_t *b, int8_t *y, int16_t *scratch);

/* Broadcasting elementwise shapes: the output is contiguous with `shape`; operand strides are in
 * elements (0 on broadcast axes). Unused leading axes have shape 1. */
typedef struct {
    int32_t rank, shape[EV_MAX_RANK], a_strides[EV_MAX_RANK], b_strides[EV_MAX_RANK];
} ev_broadcast_t;

/* add's table (optional, NULL: unused; codegen.add_table): int32 2·a' for every int8 a indexed by its byte
 * (uint8_t)a, then 2·b' likewise — a' = MBQM((a − a_zp)·2^20, a_mult, a_shift), b' the same; |a'|, |b'| < 2^28.
 * It replaces both input scalings by loads; it is used when out_mult ≥ 0 and out_shift ∈ [−23, −1]. */
typedef struct {
    ev_broadcast_t dims;
    int32_t a_zp, b_zp, out_zp, a_mult, a_shift, b_mult, b_shift, out_mult, out_shift;
    const int32_t *table;          /* 512 entries, see above */
} ev_add_t;
void ev_add(const ev_add_t *p, const int8_t *a, const int8_t *b, int8_t *y);

typedef struct {
    ev_broadcast_t dims;
    int32_t a_zp, b_zp, out_zp, mult, shift;
} ev_mul_t;
void ev_mul(const ev_mul_t *p, const int8_t *a, const int8_t *b, int8_t *y);

void ev_rescale(int32_t count, int32_t x_zp, int32_t mult, int32_t shift, int32_t out_zp, const int8_t *x, int8_t *y);
void ev_lut(int32_t count, const int8_t table[256], const int8_t *x, int8_t *y); /* y = table[x + 128] */

/* softmax over rows of `len`; exp_table[d] = round(2^15·exp(−s·d)), d = max − x ∈ [0, 255] */
void ev_softmax(int32_t rows, int32_t len, const uint16_t exp_table[256], const int8_t *x, int8_t *y);

typedef struct {
    int32_t rows, len;
    int64_t eps_q;
    int32_t out_zp;
    const int32_t *mult, *shift, *beta; /* per channel (len) */
    /* NULL, or per channel int32 (M, c, n) of the doubled-sum requantization with z = out_zp + β folded into c
     * (codegen.layernorm_rq2: every channel with M ≠ INT32_MIN, shift ∈ [−23, −1], |c| ≤ 2^30) */
    const int32_t *rq2;
} ev_layernorm_t;
void ev_layernorm(const ev_layernorm_t *p, const int8_t *x, int8_t *y);

typedef struct {
    int32_t n, c, h, w, oh, ow, kh, kw, stride_h, stride_w, pad_t, pad_l;
    int32_t x_zp, out_zp, mult, shift;  /* avgpool only */
    int32_t dil_h, dil_w;               /* maxpool only */
} ev_pool_t;
void ev_avgpool(const ev_pool_t *p, const int8_t *x, int8_t *y); /* padding counts as 0 (x − z_x) */
void ev_maxpool(const ev_pool_t *p, const int8_t *x, int8_t *y); /* padding is −128 */

/* y[o, i] = requantize(Σ_r (x[o, r, i] − x_zp)): reduce the middle axis of x viewed as (outer, reduce, inner) */
typedef struct {
    int32_t outer, reduce, inner, x_zp, mult, shift, out_zp;
} ev_reduce_mean_t;
void ev_reduce_mean(const ev_reduce_mean_t *p, const int8_t *x, int8_t *y);

/* Data moves. ev_copy: y[index·out_strides] = x[index·in_strides] for every index of `shape` (strides in
 * elements) — transpose, slice, split and concat are all this. ev_gather: y (outer, n_idx, inner) =
 * x (outer, axis_len, inner) taken at `indices` along the middle axis. */
void ev_copy(int32_t rank, const int32_t *shape, const int32_t *in_strides, const int32_t *out_strides,
             const int8_t *x, int8_t *y);
void ev_gather(int32_t outer, int32_t axis_len, int32_t inner, const int32_t *indices, int32_t n_idx,
               const int8_t *x, int8_t *y);

#endif /* EV_KERNELS_H */
