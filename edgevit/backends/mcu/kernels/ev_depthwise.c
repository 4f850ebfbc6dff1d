/* ev_conv2d's depthwise path (group == c == cout) ↔ integer_ops.conv2d. */
#include "ev_kernels.h"
#include "ev_common.h"

/* Depthwise (group == c == cout): one kh·kw filter per channel. Each channel is first copied into a padded
 * plane in scratch (EV_DEPTHWISE_SCRATCH_BYTES: every window of the output inside it, the padding as x_zp), so
 * every output pixel — border ones included — is Σ x·w − z·Σw over its full window, without bounds checks.
 *
 * Requantization: ev_rq2 (ev_common.h) of s = 2·(Σ (x − z)·w + bias), 5 instructions with the store, when
 * ev_rq2_ok(M, e) and |bias| ≤ lim (checked per channel: no saturation). The factor 2 is in the weights (int16
 * pairs), so s is what the SMLADs sum. */

static inline int32_t dw_plane_w(const ev_conv2d_t *p) { /* the padded plane's row length (EV_DEPTHWISE_SCRATCH_BYTES) */
    return ((p->ow - 1) * p->stride_w + (p->kw - 1) * p->dil_w + 1 + 1 + 3) & ~3;
}

#if EV_SIMD
/* Dense 3×3, stride_w 1 or 2. Each kernel row's word (a0, a1, a2, a3) unpacked as lo = (a0, a2), hi = (a1, a3);
 * the filter as int16 pairs W_k = (t_k0, t_k2), A = (t11, t21), B = (t01, t11), all doubled (s above):
 *   stride 1:  out(ox) = Σ_k lo_k·W_k + hi_k.lo·t_k1,   out(ox + 1) = Σ_k hi_k·W_k + lo_k.hi·t_k1
 *   stride 2:  out(ox) = Σ_k lo_k·W_k + hi_k.lo·t_k1 (one word per output and row)
 * (SMLAD, and SMLAxy for a single halfword product). Two output rows of stride_h 1 share 2 of their 4 input
 * rows, and the centre taps of those two packed as c = (hi_1.lo, hi_2.lo), d = (lo_1.hi, lo_2.hi) serve both
 * (c·A in row 0, c·B in row 1): 5 instead of 6 multiplies per output. */
typedef struct {
    int32_t w0, w1, w2, a, b, mult, c, n, ow; /* the filter, ev_rq2_t's fields, the output row length */
    const int8_t *end;                         /* y after dw_rows2's last block */
} dw_k_t;

static inline int32_t dw_pair(int32_t lo, int32_t hi) { /* (lo, hi) as int16 halves */
    return (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16));
}

/* One row pair's 2×2 blocks, output rows y and y + ow up to k->end, from plane row r: per block 4 LDR, 8 SXTB16,
 * 3 PKH, 20 SMLAD / SMLAxy, 4 loads of constants (k), 4 × ev_rq2 and the loop: 64 instructions for 36 MACs. One
 * asm block: GCC's own allocation of the 14 live registers spills in the loop. Input rows 3, 2, 1, 0 in that
 * order, so row 0's load advances r. */
static void dw_rows2(const int8_t *r, int32_t pw, int8_t *y, const dw_k_t *k, int32_t init) {
    int32_t s00, s01, s10, s11, t1, t2, t3, t4, t5;
    __asm__ volatile(
        "1:\n\t"
        "add %[t5], %[r], %[pw], lsl #1\n\t"
        "ldr %[t1], [%[t5], %[pw]]\n\t"            /* row 3 */
        "ldrd %[t3], %[t4], [%[k], #8]\n\t"        /* W2, A */
        "sxtb16 %[t2], %[t1], ror #8\n\t"
        "sxtb16 %[t1], %[t1]\n\t"
        "smlad %[s10], %[t1], %[t3], %[init]\n\t"
        "smlad %[s11], %[t2], %[t3], %[init]\n\t"
        "smlabt %[s10], %[t2], %[t4], %[s10]\n\t"  /* hi_3.lo·t21 */
        "smlatt %[s11], %[t1], %[t4], %[s11]\n\t"  /* lo_3.hi·t21 */
        "ldr %[t1], [%[t5]]\n\t"                   /* row 2 */
        "sxtb16 %[t2], %[t1], ror #8\n\t"
        "sxtb16 %[t1], %[t1]\n\t"
        "smlad %[s00], %[t1], %[t3], %[init]\n\t"
        "smlad %[s01], %[t2], %[t3], %[init]\n\t"
        "ldr %[t3], [%[k], #4]\n\t"                /* W1 */
        "smlad %[s10], %[t1], %[t3], %[s10]\n\t"
        "smlad %[s11], %[t2], %[t3], %[s11]\n\t"
        "pkhbt %[t5], %[t2], %[t1]\n\t"            /* (hi_2.lo, lo_2.hi) */
        "ldr %[t1], [%[r], %[pw]]\n\t"             /* row 1 */
        "sxtb16 %[t2], %[t1], ror #8\n\t"
        "sxtb16 %[t1], %[t1]\n\t"
        "smlad %[s00], %[t1], %[t3], %[s00]\n\t"
        "smlad %[s01], %[t2], %[t3], %[s01]\n\t"
        "pkhbt %[t3], %[t2], %[t5], lsl #16\n\t"   /* c */
        "pkhtb %[t5], %[t5], %[t1], asr #16\n\t"   /* d */
        "smlad %[s00], %[t3], %[t4], %[s00]\n\t"
        "smlad %[s01], %[t5], %[t4], %[s01]\n\t"
        "ldr %[t4], [%[k], #16]\n\t"               /* B */
        "smlad %[s10], %[t3], %[t4], %[s10]\n\t"
        "smlad %[s11], %[t5], %[t4], %[s11]\n\t"
        "ldr %[t3], [%[k]]\n\t"                    /* W0 */
        "smlad %[s10], %[t1], %[t3], %[s10]\n\t"
        "smlad %[s11], %[t2], %[t3], %[s11]\n\t"
        "ldr %[t1], [%[r]], #2\n\t"                /* row 0 */
        "sxtb16 %[t2], %[t1], ror #8\n\t"
        "sxtb16 %[t1], %[t1]\n\t"
        "smlad %[s00], %[t1], %[t3], %[s00]\n\t"
        "smlad %[s01], %[t2], %[t3], %[s01]\n\t"
        "smlabb %[s00], %[t2], %[t4], %[s00]\n\t"  /* hi_0.lo·t01 */
        "smlatb %[s01], %[t1], %[t4], %[s01]\n\t"  /* lo_0.hi·t01 */
        "ldrd %[t1], %[t2], [%[k], #20]\n\t"       /* M, c */
        "ldrd %[t3], %[t4], [%[k], #28]\n\t"       /* n, ow */
#define EV_DW_RQ(s, st)                                                                                         \
        "smmlar %[t5], %[" #s "], %[t1], %[t2]\n\t"                                                            \
        "add %[t5], %[t5], %[" #s "], asr #31\n\t"                                                             \
        "asr %[t5], %[t5], %[t3]\n\t"                                                                          \
        "ssat %[t5], #8, %[t5]\n\t"                                                                            \
        "strb %[t5], " st "\n\t"
        /* row 1's output before row 0's, which advances y */
        EV_DW_RQ(s10, "[%[y], %[t4]]") EV_DW_RQ(s00, "[%[y]], #1") EV_DW_RQ(s11, "[%[y], %[t4]]")
        EV_DW_RQ(s01, "[%[y]], #1")
#undef EV_DW_RQ
        "ldr %[t1], [%[k], #36]\n\t"
        "cmp %[y], %[t1]\n\t"
        "bne 1b"
        : [r] "+r"(r), [y] "+r"(y), [s00] "=&r"(s00), [s01] "=&r"(s01), [s10] "=&r"(s10), [s11] "=&r"(s11),
          [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3), [t4] "=&r"(t4), [t5] "=&r"(t5)
        : [pw] "r"(pw), [k] "r"(k), [init] "r"(init)
        : "memory", "cc");
}

/* the 1×2 block at r (stride_w 1) */
EV_ALWAYS_INLINE void dw_block1x2(const int8_t *r, int32_t pw, const dw_k_t *k, int32_t init, int32_t s[2]) {
    uint32_t u = ev_ld32(r);
    int32_t l = ev_lo(u), h = ev_hi(u);
    int32_t s0 = __smlabb(h, k->b, __smlad(l, k->w0, init)), s1 = __smlatb(l, k->b, __smlad(h, k->w0, init));
    u = ev_ld32(r + pw);
    l = ev_lo(u);
    h = ev_hi(u);
    s0 = __smlabt(h, k->b, __smlad(l, k->w1, s0));
    s1 = __smlatt(l, k->b, __smlad(h, k->w1, s1));
    u = ev_ld32(r + 2 * pw);
    l = ev_lo(u);
    h = ev_hi(u);
    s[0] = __smlabt(h, k->a, __smlad(l, k->w2, s0));
    s[1] = __smlatt(l, k->a, __smlad(h, k->w2, s1));
}

/* one output at r (stride_w 2: its window's 3 bytes of each row; the 4th has no weight) */
EV_ALWAYS_INLINE int32_t dw_dot1(const int8_t *r, int32_t pw, const dw_k_t *k, int32_t init) {
    uint32_t u = ev_ld32(r);
    int32_t s = __smlabb(ev_hi(u), k->b, __smlad(ev_lo(u), k->w0, init));
    u = ev_ld32(r + pw);
    s = __smlabt(ev_hi(u), k->b, __smlad(ev_lo(u), k->w1, s));
    u = ev_ld32(r + 2 * pw);
    return __smlabt(ev_hi(u), k->a, __smlad(ev_lo(u), k->w2, s));
}

/* one channel from its plane: rows in pairs when stride_h is 1 */
static void dw3x3(const ev_conv2d_t *p, const int8_t *plane, int32_t pw, int8_t *y, dw_k_t *k, int32_t init,
                  ev_rq2_t q) {
    const int32_t oh = p->oh, ow = p->ow, sh = p->stride_h, ow2 = ow & ~1;
    int32_t oy = 0, s[2];
    if (p->stride_w == 1) {
        if (sh == 1)
            for (; oy + 2 <= oh; oy += 2, y += 2 * ow) {
                const int8_t *r = plane + oy * pw;
                if (ow2) {
                    k->end = y + ow2;
                    dw_rows2(r, pw, y, k, init);
                }
                if (ow2 < ow) { /* odd last column */
                    dw_block1x2(r + ow2, pw, k, init, s);
                    y[ow2] = ev_rq2(s[0], q);
                    dw_block1x2(r + pw + ow2, pw, k, init, s);
                    y[ow + ow2] = ev_rq2(s[0], q);
                }
            }
        for (; oy < oh; oy++, y += ow) {
            const int8_t *r = plane + oy * sh * pw;
            int32_t ox = 0;
            for (; ox < ow2; ox += 2) {
                dw_block1x2(r + ox, pw, k, init, s);
                y[ox] = ev_rq2(s[0], q);
                y[ox + 1] = ev_rq2(s[1], q);
            }
            if (ox < ow) {
                dw_block1x2(r + ox, pw, k, init, s);
                y[ox] = ev_rq2(s[0], q);
            }
        }
    } else {
        for (; oy < oh; oy++, y += ow) {
            const int8_t *r = plane + oy * sh * pw;
            for (int32_t ox = 0; ox < ow; ox++) y[ox] = ev_rq2(dw_dot1(r + 2 * ox, pw, k, init), q);
        }
    }
}
#endif

typedef struct { /* a channel's part of the plane: input columns [c0, c0 + n) and rows [r0, r1) */
    int32_t c0, n, r0, r1;
} dw_copy_t;

/* rows of n input bytes at s (row length w) into the plane at t (row length pw), whose padding was filled with
 * x_zp once per call. Not inlined: in its own registers the copy is ~4 instructions per word and ~8 per row. */
static __attribute__((noinline)) void dw_plane(const int8_t *s, int8_t *t, int32_t w, int32_t pw, int32_t rows,
                                               int32_t n) {
    const int32_t n4 = n & ~3;
    for (; rows > 0; rows--, s += w, t += pw) {
        int32_t i = 0;
        for (; i < n4; i += 4) ev_st32(t + i, ev_ld32(s + i));
        for (; i < n; i++) t[i] = s[i];
    }
}

void ev_conv2d_depthwise(const ev_conv2d_t *p, const int8_t *x, int8_t *y, int8_t *plane) {
    const int32_t h = p->h, w = p->w, kh = p->kh, kw = p->kw, dh = p->dil_h, dw = p->dil_w, zp = p->x_zp;
    const int32_t sh = p->stride_h, sw = p->stride_w, oh = p->oh, ow = p->ow, kk = kh * kw, out_zp = p->out_zp;
    const int32_t pw = dw_plane_w(p), ph = (oh - 1) * sh + (kh - 1) * dh + 1, pt = p->pad_t, pl = p->pad_l;
    const int dense3x3 = kh == 3 && kw == 3 && dh == 1 && dw == 1 && (sw == 1 || sw == 2);
    /* |Σ (x − z)·w| ≤ 255·128·kh·kw: a bias within ±lim keeps s = 2·(that + bias) below 2^30 (ev_rq2) */
    const int64_t lim64 = (1 << 29) - 1 - (int64_t)255 * 128 * kk;
    const int32_t lim = lim64 < 0 ? -1 : (int32_t)lim64; /* −1: no bias qualifies */
    dw_copy_t g;
    g.c0 = pl < 0 ? -pl : 0;
    g.n = (pw - pl < w ? pw - pl : w) - g.c0;
    g.r0 = pt < 0 ? -pt : 0;
    g.r1 = ph - pt < h ? ph - pt : h;
    if (oh <= 0 || ow <= 0) return;
    memset(plane, zp, (size_t)(ph * pw)); /* the padding; dw_plane overwrites the input's part per channel */
    for (int32_t b = 0; b < p->n; b++) {
        for (int32_t ch = 0; ch < p->c; ch++) {
            const int8_t *xc = x + ((int64_t)b * p->c + ch) * h * w, *wc = p->weight + ch * kk;
            int8_t *yc = y + ((int64_t)b * p->c + ch) * oh * ow;
            const int32_t bias = p->bias ? p->bias[ch] : 0, mult = p->mult[ch], shift = p->shift[ch];
            const int dq = ev_rq2_ok(mult, shift) && bias >= -lim && bias <= lim;
            const ev_rq2_t q = ev_rq2_make(mult, dq ? shift : -1, out_zp);
            if (g.n > 0 && g.r1 > g.r0)
                dw_plane(xc + g.r0 * w + g.c0, plane + (g.r0 + pt) * pw + g.c0 + pl, w, pw, g.r1 - g.r0, g.n);
#if EV_SIMD
            if (dense3x3 && dq) {
                /* the doubled filter as int16 pairs, and s's start 2·(bias − z·Σw) (mod 2^32) */
                const int32_t t00 = 2 * wc[0], t01 = 2 * wc[1], t02 = 2 * wc[2], t10 = 2 * wc[3], t11 = 2 * wc[4];
                const int32_t t12 = 2 * wc[5], t20 = 2 * wc[6], t21 = 2 * wc[7], t22 = 2 * wc[8];
                dw_k_t k = {dw_pair(t00, t02), dw_pair(t10, t12), dw_pair(t20, t22), dw_pair(t11, t21),
                            dw_pair(t01, t11), q.mult, q.c, q.n, ow, yc};
                const int32_t zz = dw_pair(zp, zp), z01 = zp * t01;
                const int32_t zsum = __smlad(k.w0, zz, __smlad(k.w1, zz, __smlad(k.w2, zz, __smlad(k.a, zz, z01))));
                dw3x3(p, plane, pw, yc, &k, (int32_t)(2 * (uint32_t)bias - (uint32_t)zsum), q);
                continue;
            }
#endif
            int32_t wsum = 0;
            for (int32_t i = 0; i < kk; i++) wsum += wc[i];
            /* |z·Σw| ≤ 128·127·kh·kw; s = 2·(acc − z·Σw + bias), exact mod 2^32 */
            const uint32_t init = 2 * ((uint32_t)bias - (uint32_t)(zp * wsum));
            const int fast = ev_fast_ok(mult, shift);
            int32_t t[9] = {0};
            if (dense3x3)
                for (int32_t i = 0; i < 9; i++) t[i] = wc[i];
            for (int32_t oy = 0; oy < oh; oy++) {
                int8_t *yr = yc + oy * ow;
                for (int32_t ox = 0; ox < ow; ox++) {
                    const int8_t *r0 = plane + oy * sh * pw + ox * sw;
                    int32_t acc = 0; /* Σ x·w; Σ (x − z)·w = acc − z·Σw fits int32 (the quantizer's guarantee) */
                    if (dense3x3) {
                        const int8_t *r1 = r0 + pw, *r2 = r1 + pw;
                        acc = r0[0] * t[0] + r0[1] * t[1] + r0[2] * t[2] + r1[0] * t[3] + r1[1] * t[4] + r1[2] * t[5] +
                              r2[0] * t[6] + r2[1] * t[7] + r2[2] * t[8];
                    } else {
                        const int8_t *wr = wc;
                        for (int32_t ky = 0; ky < kh; ky++, r0 += dh * pw, wr += kw)
                            for (int32_t kx = 0; kx < kw; kx++) acc += r0[kx * dw] * wr[kx];
                    }
                    yr[ox] = dq ? ev_rq2((int32_t)(2 * (uint32_t)acc + init), q)
                                : ev_requant(fast, acc - zp * wsum, bias, mult, shift, out_zp);
                }
            }
        }
    }
}
