/* Private to the kernels (not part of the API): the int16 dot products of conv2d, linear and matmul and fast
 * int32 requantizations used by every op with int32 sums, each in an ACLE SIMD version (__ARM_FEATURE_DSP) and a
 * portable C version.
 *
 * Dot products run on int16 operands in STEPS of 2 values: per block of 4 values the pairs (v0, v2) and
 * (v1, v3) — the order in which __sxtb16(w) = (w0, w2) and __sxtb16(w ror 8) = (w1, w3) unpack 4 int8 read as
 * one word, so packing needs no shuffle — then the k % 4 tail as (v0, v1) and (v0, 0): S = ceil(k/2) steps.
 *   quad operand (scratch, ev_pack4 / conv2d's im2col: x − zero point of 4 pixels / rows): per step the 4
 *   vectors' pairs
 *   pair operand (EV_WEIGHT16 pair blocks of two output channels; matmul packs b's columns so): per step the 2
 *   vectors' pairs
 * The 2 × 4 kernel (ev_run_pairs) then does per step one LDRD of the pair operand, two of the quad operand and 8
 * SMLAD: 16 MACs in 11 instructions. Both builds use the same layouts, so the host tests cover the packing too.
 * All sums are exact integers: any accumulation order gives the reference's bits.
 */
#ifndef EV_COMMON_H
#define EV_COMMON_H

#include <stdint.h>
#include <string.h>
#include "ev_kernels.h"

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define EV_SIMD 1
#else
#define EV_SIMD 0
#endif

#define EV_ALWAYS_INLINE static inline __attribute__((always_inline))

/* Unaligned 32-bit load (weight rows and odd-k scratch rows are not word aligned); ARMv7-M LDR allows it. */
static inline uint32_t ev_ld32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline void ev_st32(void *p, uint32_t v) { memcpy(p, &v, 4); }

#if EV_SIMD
static inline int32_t ev_lo(uint32_t v) { return __sxtb16((int32_t)v); } /* (v0, v2) */
/* (v1, v3): SXTB16 with its built-in ROR #8 — ACLE has no rotated form and GCC does not fold a separate
 * rotate into the builtin, so this one instruction is inline assembly. */
static inline int32_t ev_hi(uint32_t v) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
/* (v0, v2) + nz and (v1, v3) + nz halfwise (nz = −zero point in both halves): unpack and subtract in one */
static inline int32_t ev_lo_add(uint32_t v, int32_t nz) { return __sxtab16(nz, (int32_t)v); }
static inline int32_t ev_hi_add(uint32_t v, int32_t nz) {
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(nz), "r"(v));
    return r;
}
/* (a's low half, b's low half) and (a's high half, b's high half): PKHBT / PKHTB, which GCC does not pick */
static inline uint32_t ev_pk_lo(uint32_t a, uint32_t b) {
    uint32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
static inline uint32_t ev_pk_hi(uint32_t a, uint32_t b) {
    uint32_t r;
    __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
/* (a, b) = the two words at p (word aligned), p += 4 int16 */
#define EV_LDRD_POST(a, b, p) __asm__ volatile("ldrd %0, %1, [%2], #8" : "=r"(a), "=r"(b), "+r"(p) : : "memory")
#endif

/* Fast requantization: the bits of the header's ev_mbqm / ev_requantize in ~25 instead of ~50 instructions
 * on a Cortex-M7. The spec's SRDHM with its ±nudge and truncating division equals floor((x·M + 2^30) / 2^31)
 * for every product (ceil(t/d) = floor((t+d−1)/d)); with M ≠ INT32_MIN that fits int32 (the one saturating
 * case is INT32_MIN²), and with e ∈ [−31, 0] so does the rest. Kernels check ev_fast_ok once per call or
 * channel and keep the header's int64 path for other multipliers (e > 0: a real factor above 1, rare). */
static inline int ev_fast_ok(int32_t mult, int32_t shift) { return mult != INT32_MIN && shift <= 0 && shift >= -31; }

static inline int ev_fast_ok_all(const int32_t *mult, const int32_t *shift, int32_t n) {
    int ok = 1;
    for (int32_t i = 0; i < n; i++) ok &= ev_fast_ok(mult[i], shift[i]);
    return ok;
}

/* MBQM(x, M, e) of an int32 x, when ev_fast_ok(M, e) */
static inline int32_t ev_mbqm32_fast(int32_t x, int32_t mult, int32_t shift) {
    const int32_t h = (int32_t)(((int64_t)x * mult + (1 << 30)) >> 31);
    const int32_t mask = (int32_t)((1u << -shift) - 1u);
    return (h >> -shift) + ((h & mask) > (mask >> 1) + (h < 0)); /* RDBPOT, arithmetic >> as the spec */
}

static inline int32_t ev_sat_add(int32_t a, int32_t b) { /* sat32(a + b) */
#if EV_SIMD
    return __qadd(a, b);
#else
    return ev_sat32((int64_t)a + b);
#endif
}

/* clamp8(a + b + c) of int32 values, exactly (a saturated sum keeps the sign once past ±2^31) */
static inline int8_t ev_clamp8_sum3(int32_t a, int32_t b, int32_t c) {
#if EV_SIMD
    return (int8_t)__ssat(__qadd(__qadd(a, b), c), 8);
#else
    return ev_clamp8((int64_t)a + b + c);
#endif
}

/* requantize(sum + bias, M, e, z) of int32 sum and bias (their sum saturated as the spec's sat32), when
 * ev_fast_ok(M, e) */
static inline int8_t ev_requant_fast(int32_t sum, int32_t bias, int32_t mult, int32_t shift, int32_t zp) {
#if EV_SIMD
    return (int8_t)__ssat(__qadd(ev_mbqm32_fast(__qadd(sum, bias), mult, shift), zp), 8);
#else
    return ev_clamp8((int64_t)ev_mbqm32_fast(ev_sat32((int64_t)sum + bias), mult, shift) + zp);
#endif
}

/* the same for any (M, e); `fast` = ev_fast_ok(M, e), computed once by the caller */
static inline int8_t ev_requant(int fast, int32_t sum, int32_t bias, int32_t mult, int32_t shift, int32_t zp) {
    return fast ? ev_requant_fast(sum, bias, mult, shift, zp) : ev_requantize((int64_t)sum + bias, mult, shift, zp);
}

/* Cheaper requantization (~9 instructions per output on M7) for ev_rq_ok(M, e): M ≠ INT32_MIN, n = −e ∈ [2, 23].
 * With h = SRDHM(x, M) = floor((P + 2^30) / 2^31), P = x·M (above), RDBPOT(h, n) = floor((h + 2^(n−1) − [h<0]) / 2^n)
 * (ties away from zero), and nesting the floors (integer addends, integer divisors):
 *   RDBPOT(h, n) = floor((T + 2^(30+n)) / 2^(31+n)),  T = P + 2^30 − [h<0]·2^31
 *                = (hi32(T) + 2^(n−2)) >> (n−1)          (n ≥ 2; hi32(T) = floor(T / 2^32))
 * [h<0] may be replaced by t = [x and M of opposite signs]: they differ only when −2^30 ≤ P ≤ 0, where h = 0 and
 * both give 0. z_o is folded in as z_o·2^(n−1) (|hi32(T)| ≤ 2^30, n ≤ 23: no overflow), so per output: T's low
 * word from t, one SMLAL, an add, a shift, SSAT. */
static inline int ev_rq_ok(int32_t mult, int32_t shift) { return mult != INT32_MIN && shift <= -2 && shift >= -23; }

static inline int ev_rq_ok_all(const int32_t *mult, const int32_t *shift, int32_t n) {
    int ok = 1;
    for (int32_t i = 0; i < n; i++) ok &= ev_rq_ok(mult[i], shift[i]);
    return ok;
}

typedef struct { /* one channel's constants for ev_rq */
    int32_t mult, rsh, rcz; /* M, n − 1, 2^(n−2) + z_o·2^(n−1) */
} ev_rq_t;

static inline ev_rq_t ev_rq_make(int32_t mult, int32_t shift, int32_t zp) {
    const int32_t rsh = -shift - 1;
    ev_rq_t q = {mult, rsh, (int32_t)((1u << rsh >> 1) + ((uint32_t)zp << rsh))};
    return q;
}

/* clamp8(z_o + RDBPOT(SRDHM(x, M), n)) of an int32 x (the caller saturates sum + bias), when ev_rq_ok */
static inline int8_t ev_rq(int32_t x, ev_rq_t q) {
    int32_t hi = (x ^ q.mult) >> 31; /* −1 or 0: T − x·M = 2^30 + hi·2^31, as (hi, lo) words */
#if EV_SIMD
    uint32_t lo;
    /* lo = 2^30 | hi << 31 in one ORR with a shifted operand (GCC makes it an AND and an ORR) */
    __asm__("orr %0, %1, %2, lsl #31" : "=r"(lo) : "r"(1u << 30), "r"(hi));
    __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(x), "r"(q.mult));
    return (int8_t)__ssat((hi + q.rcz) >> q.rsh, 8);
#else
    hi = (int32_t)(((int64_t)hi * 2147483648LL + (1 << 30) + (int64_t)x * q.mult) >> 32);
    return ev_clamp8((hi + q.rcz) >> q.rsh);
#endif
}

/* Requantization of a DOUBLED sum in 5 instructions per output (SMMLAR, ADD, ASR, SSAT, STRB) when
 * ev_rq2_ok(M, e) — M ≥ 0, n = −e ∈ [1, 23] — and |x| < 2^29 (x = sum + bias: no saturation). With x2 = 2x,
 * SRDHM(x, M) = floor((x·M + 2^30) / 2^31) = floor((x2·M + 2^31) / 2^32): SMMLAR's rounding. Then
 *   z_o + RDBPOT(h, n) = (h + c − [h<0]) >> n,  c = 2^(n−1) + z_o·2^n   (ties away from zero, n ≥ 1)
 * with c as SMMLAR's addend and [h<0] replaced by [x<0]: they differ only when −2^30 ≤ x·M < 0, where h = 0 and
 * both give z_o. |h + c| < 2^29 + 2^30 + 2^22: no overflow. The 2 × 4 kernel gets x2 for free: doubled EV_WEIGHT16
 * weights, matmul's b doubled in its packing. */
static inline int ev_rq2_ok(int32_t mult, int32_t shift) { return mult >= 0 && shift <= -1 && shift >= -23; }

static inline int ev_rq2_ok_all(const int32_t *mult, const int32_t *shift, int32_t n) {
    int ok = 1;
    for (int32_t i = 0; i < n; i++) ok &= ev_rq2_ok(mult[i], shift[i]);
    return ok;
}

/* every sum + bias of a call within ±2^29: |bias| + per·k below it (per: the largest |product|; bias may be NULL) */
static inline int ev_rq2_range_ok(const int32_t *bias, int32_t n, int32_t k, int32_t per) {
    const int64_t lim = ((int64_t)1 << 29) - (int64_t)per * k;
    int ok = lim > 0;
    for (int32_t i = 0; bias && i < n; i++) ok &= bias[i] < lim && bias[i] > -lim;
    return ok;
}

typedef struct { /* one channel's constants for ev_rq2 */
    int32_t mult, c, n;
} ev_rq2_t;

static inline ev_rq2_t ev_rq2_make(int32_t mult, int32_t shift, int32_t zp) {
    const int32_t n = -shift;
    ev_rq2_t q = {mult, (int32_t)((1u << (n - 1)) + ((uint32_t)zp << n)), n};
    return q;
}

/* clamp8(z_o + RDBPOT(SRDHM(x, M), n)) of x2 = 2x, when ev_rq2_ok and |x| < 2^29 */
static inline int8_t ev_rq2(int32_t x2, ev_rq2_t q) {
#if EV_SIMD
    int32_t h;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(h) : "r"(x2), "r"(q.mult), "r"(q.c));
    return (int8_t)__ssat((h + (x2 >> 31)) >> q.n, 8);
#else
    const int32_t h = (int32_t)(((int64_t)x2 * q.mult + ((int64_t)1 << 31)) >> 32) + q.c;
    return ev_clamp8((h + (x2 >> 31)) >> q.n);
#endif
}

/* Four int16 vectors (v_j[i] = x_j[i·st] − zp, x_j = xv[j]), i < k, as the quad operand: per step the pairs
 * (v_0, v_1, v_2, v_3), 8·ceil(k/2) values. */
static inline void ev_pack4(const int8_t *const xv[4], int32_t st, int32_t k, int32_t zp, int16_t *s) {
    int32_t i = 0;
#if EV_SIMD
    const int8_t *x0 = xv[0], *x1 = xv[1], *x2 = xv[2], *x3 = xv[3];
    const int32_t nz = (int32_t)(((uint32_t)-zp & 0xFFFFu) * 0x10001u);
    if (st == 1) { /* contiguous vectors: one word of each; lo = (v0, v2), hi = (v1, v3) */
        for (; i + 4 <= k; i += 4, s += 16) {
            const uint32_t v0 = ev_ld32(x0 + i), v1 = ev_ld32(x1 + i), v2 = ev_ld32(x2 + i), v3 = ev_ld32(x3 + i);
            ev_st32(s, (uint32_t)ev_lo_add(v0, nz));
            ev_st32(s + 2, (uint32_t)ev_lo_add(v1, nz));
            ev_st32(s + 4, (uint32_t)ev_lo_add(v2, nz));
            ev_st32(s + 6, (uint32_t)ev_lo_add(v3, nz));
            ev_st32(s + 8, (uint32_t)ev_hi_add(v0, nz));
            ev_st32(s + 10, (uint32_t)ev_hi_add(v1, nz));
            ev_st32(s + 12, (uint32_t)ev_hi_add(v2, nz));
            ev_st32(s + 14, (uint32_t)ev_hi_add(v3, nz));
        }
    } else if (x1 == x0 + 1 && x2 == x0 + 2 && x3 == x0 + 3) {
        /* 4 adjacent pixels of NCHW: one word holds the 4 vectors' values at i; 4 words (i .. i+3) are
         * transposed with SXTAB16 and halfword packing */
        for (; i + 4 <= k; i += 4, s += 16) {
            const int8_t *a = x0 + i * st;
            const uint32_t u0 = ev_ld32(a), u1 = ev_ld32(a + st), u2 = ev_ld32(a + 2 * st), u3 = ev_ld32(a + 3 * st);
            /* lo(u_c) = (v_0, v_2) at i+c, hi(u_c) = (v_1, v_3) at i+c, minus zp */
            const uint32_t l0 = (uint32_t)ev_lo_add(u0, nz), l1 = (uint32_t)ev_lo_add(u1, nz);
            const uint32_t l2 = (uint32_t)ev_lo_add(u2, nz), l3 = (uint32_t)ev_lo_add(u3, nz);
            const uint32_t h0 = (uint32_t)ev_hi_add(u0, nz), h1 = (uint32_t)ev_hi_add(u1, nz);
            const uint32_t h2 = (uint32_t)ev_hi_add(u2, nz), h3 = (uint32_t)ev_hi_add(u3, nz);
            /* step (i, i+2) of v_0 .. v_3, then step (i+1, i+3) */
            ev_st32(s, ev_pk_lo(l0, l2));
            ev_st32(s + 2, ev_pk_lo(h0, h2));
            ev_st32(s + 4, ev_pk_hi(l0, l2));
            ev_st32(s + 6, ev_pk_hi(h0, h2));
            ev_st32(s + 8, ev_pk_lo(l1, l3));
            ev_st32(s + 10, ev_pk_lo(h1, h3));
            ev_st32(s + 12, ev_pk_hi(l1, l3));
            ev_st32(s + 14, ev_pk_hi(h1, h3));
        }
    }
#endif
    for (; i + 4 <= k; i += 4, s += 16) {
        for (int32_t j = 0; j < 4; j++) {
            const int8_t *a = xv[j] + i * st;
            s[2 * j] = (int16_t)(a[0] - zp);
            s[2 * j + 1] = (int16_t)(a[2 * st] - zp);
            s[2 * j + 8] = (int16_t)(a[st] - zp);
            s[2 * j + 9] = (int16_t)(a[3 * st] - zp);
        }
    }
    for (; i < k; i += 2, s += 8) {
        for (int32_t j = 0; j < 4; j++) {
            const int8_t *a = xv[j] + i * st;
            s[2 * j] = (int16_t)(a[0] - zp);
            s[2 * j + 1] = (int16_t)(i + 1 < k ? a[st] - zp : 0);
        }
    }
}

/* acc[j] += Σ_i w[i] · v_j[i] for one int8 row w (natural order) × the quad operand s of ev_pack4: each weight
 * word is loaded and unpacked once for 4 products (per 4 values: 1 LDR + 2 SXTB16 + 4 LDRD + 8 SMLAD). */
static inline void ev_dot_1x4(const int8_t *w, const int16_t *s, int32_t k, int32_t acc[4]) {
    int32_t i = 0;
    const int16_t *sp = s;
#if EV_SIMD
    int32_t c0 = acc[0], c1 = acc[1], c2 = acc[2], c3 = acc[3];
    /* LDRD with post-increment (GCC splits the pairs into 2 LDRs and adds the pointer update): the memory
     * clobber keeps them after the scratch stores of the packing (s is word aligned) */
    for (; i + 4 <= k; i += 4) {
        const uint32_t v = ev_ld32(w + i);
        const int32_t l = ev_lo(v), h = ev_hi(v);
        int32_t a, b;
        EV_LDRD_POST(a, b, sp); c0 = __smlad(l, a, c0); c1 = __smlad(l, b, c1);
        EV_LDRD_POST(a, b, sp); c2 = __smlad(l, a, c2); c3 = __smlad(l, b, c3);
        EV_LDRD_POST(a, b, sp); c0 = __smlad(h, a, c0); c1 = __smlad(h, b, c1);
        EV_LDRD_POST(a, b, sp); c2 = __smlad(h, a, c2); c3 = __smlad(h, b, c3);
    }
    uint32_t d0 = (uint32_t)c0, d1 = (uint32_t)c1, d2 = (uint32_t)c2, d3 = (uint32_t)c3;
#else
    uint32_t d0 = (uint32_t)acc[0], d1 = (uint32_t)acc[1], d2 = (uint32_t)acc[2], d3 = (uint32_t)acc[3];
    for (; i + 4 <= k; i += 4, sp += 16) {
        const int32_t p0 = w[i], p1 = w[i + 1], p2 = w[i + 2], p3 = w[i + 3];
        d0 += (uint32_t)(p0 * sp[0] + p2 * sp[1] + p1 * sp[8] + p3 * sp[9]);
        d1 += (uint32_t)(p0 * sp[2] + p2 * sp[3] + p1 * sp[10] + p3 * sp[11]);
        d2 += (uint32_t)(p0 * sp[4] + p2 * sp[5] + p1 * sp[12] + p3 * sp[13]);
        d3 += (uint32_t)(p0 * sp[6] + p2 * sp[7] + p1 * sp[14] + p3 * sp[15]);
    }
#endif
    for (; i < k; i += 2, sp += 8) { /* the tail steps (v0, v1), (v0, 0) */
        const int32_t p0 = w[i], p1 = i + 1 < k ? w[i + 1] : 0;
        d0 += (uint32_t)(p0 * sp[0] + p1 * sp[1]); d1 += (uint32_t)(p0 * sp[2] + p1 * sp[3]);
        d2 += (uint32_t)(p0 * sp[4] + p1 * sp[5]); d3 += (uint32_t)(p0 * sp[6] + p1 * sp[7]);
    }
    acc[0] = (int32_t)d0; acc[1] = (int32_t)d1; acc[2] = (int32_t)d2; acc[3] = (int32_t)d3;
}

/* acc[j] += Σ u_0·v_j, acc[4 + j] += Σ u_1·v_j over `steps` steps: the pair operand u × the quad operand v
 * (the paths that do not requantize with ev_rq2; ev_run_pairs is the fast one). */
static inline void ev_dot_2x4(const int16_t *u, const int16_t *v, int32_t steps, int32_t acc[8]) {
    uint32_t c[8];
    for (int32_t j = 0; j < 8; j++) c[j] = (uint32_t)acc[j];
    for (int32_t t = 0; t < steps; t++, u += 4, v += 8) {
        for (int32_t j = 0; j < 4; j++) {
            c[j] += (uint32_t)(u[0] * v[2 * j] + u[1] * v[2 * j + 1]);
            c[4 + j] += (uint32_t)(u[2] * v[2 * j] + u[3] * v[2 * j + 1]);
        }
    }
    for (int32_t j = 0; j < 8; j++) acc[j] = (int32_t)c[j];
}

/* the 4 outputs of one channel / row for 4 pixels / rows / columns (`np` of them real, np ≥ 1), at y + j·ys */
EV_ALWAYS_INLINE void ev_store4(const int32_t acc[4], int32_t np, int rq, int fast, int32_t bias, int32_t mult, int32_t shift,
                          int32_t zp, int8_t *y, int32_t ys) {
    if (rq) {
        const ev_rq_t q = ev_rq_make(mult, shift, zp);
        for (int32_t j = 0; j < np; j++) y[j * ys] = ev_rq(ev_sat_add(acc[j], bias), q);
    } else {
        for (int32_t j = 0; j < np; j++) y[j * ys] = ev_requant(fast, acc[j], bias, mult, shift, zp);
    }
}

/* EV_WEIGHT16 pair blocks (ev_kernels.h): int32 2·b_0, 2·b_1, then `steps` steps of the two channels' doubled
 * weights, then int32 (M, c, n) of ev_rq2 for channel 0 and for channel 1 — 2·EV_WEIGHT16_ROW(k) + 16 int16. */
#define EV_PAIR16_SIZE(k16) (2 * (k16) + 16)

/* npairs ≥ 1 pair blocks from w × the quad operand s (all 4 vectors real), requantized with ev_rq2 from the
 * blocks' constants: channel c's output j at y + c·ych + j·ys. */
static __attribute__((noinline, unused)) void ev_run_pairs(const int16_t *w, const int16_t *s, int32_t steps,
                                                         int8_t *y, int32_t ys, int32_t ych, int32_t npairs) {
#if EV_SIMD && defined(__OPTIMIZE__) /* unoptimized builds keep r7 as frame pointer: 13 registers */
    /* One asm block for the whole run: 8 sums + 2 pointers + 4 operands fill the 14 registers, so everything
     * else is read from this stack struct. Per step one LDRD of weights (both channels) and two of scratch feed
     * 8 SMLAD; 8 steps per pass, the first pass entered past (−steps) mod 8 of them through a TBB table. The
     * sums start at the header's 2·bias and the requantization needs no extra register. */
    struct {
        const int16_t *s, *se, *we; /* the quad operand, its end, the end of the pair blocks */
        int32_t skip, ys, ych;
        int8_t *y;
    } m = {s, s + 8 * steps, w + npairs * EV_PAIR16_SIZE(2 * steps), (8 - (steps & 7)) & 7, ys, ych, y};
    const int16_t *up = w, *vp;
    int32_t c0, c1, c2, c3, c4, c5, c6, c7, ua, ub, va, vb;
#define EV_STEP(e)                                                                                             \
    ".Ls" #e "%=:\n\t"                                                                                          \
    "ldrd %[ua], %[ub], [%[up]], #8\n\t"                                                                        \
    "ldrd %[va], %[vb], [%[vp]], #8\n\t"                                                                        \
    "smlad %[c0], %[ua], %[va], %[c0]\n\t"                                                                      \
    "smlad %[c1], %[ua], %[vb], %[c1]\n\t"                                                                      \
    "smlad %[c4], %[ub], %[va], %[c4]\n\t"                                                                      \
    "smlad %[c5], %[ub], %[vb], %[c5]\n\t"                                                                      \
    "ldrd %[va], %[vb], [%[vp]], #8\n\t"                                                                        \
    "smlad %[c2], %[ua], %[va], %[c2]\n\t"                                                                      \
    "smlad %[c3], %[ua], %[vb], %[c3]\n\t"                                                                      \
    "smlad %[c6], %[ub], %[va], %[c6]\n\t"                                                                      \
    "smlad %[c7], %[ub], %[vb], %[c7]\n\t"
/* sum c → int8 at `at` (vp is free after the dot loop; ua, ub, va = M, c, n) */
#define EV_RQ(c, at)                                                                                           \
    "smmlar %[vp], %[" c "], %[ua], %[ub]\n\t"                                                                  \
    "add %[" c "], %[vp], %[" c "], asr #31\n\t"                                                                \
    "asr %[" c "], %[" c "], %[va]\n\t"                                                                         \
    "ssat %[" c "], #8, %[" c "]\n\t"                                                                           \
    "strb %[" c "], " at "\n\t"
    __asm__ volatile(
        ".Lpair%=:\n\t"
        "ldr %[vp], %[s]\n\t"
        "ldr %[ua], %[skip]\n\t"
        "ldrd %[c0], %[c4], [%[up]], #8\n\t"
        "mov %[c1], %[c0]\n\t"
        "mov %[c2], %[c0]\n\t"
        "mov %[c3], %[c0]\n\t"
        "mov %[c5], %[c4]\n\t"
        "mov %[c6], %[c4]\n\t"
        "mov %[c7], %[c4]\n\t"
        "tbb [pc, %[ua]]\n\t"
        ".Ltab%=:\n\t"
        ".byte (.Ls0%=-.Ltab%=)/2, (.Ls1%=-.Ltab%=)/2, (.Ls2%=-.Ltab%=)/2, (.Ls3%=-.Ltab%=)/2\n\t"
        ".byte (.Ls4%=-.Ltab%=)/2, (.Ls5%=-.Ltab%=)/2, (.Ls6%=-.Ltab%=)/2, (.Ls7%=-.Ltab%=)/2\n\t"
        EV_STEP(0) EV_STEP(1) EV_STEP(2) EV_STEP(3) EV_STEP(4) EV_STEP(5) EV_STEP(6) EV_STEP(7)
        "ldr %[ua], %[se]\n\t"
        "cmp %[vp], %[ua]\n\t"
        "bne .Ls0%=\n\t"
        "ldrd %[ua], %[ub], [%[up]], #8\n\t"
        "ldr %[va], [%[up]], #4\n\t"
        "ldr %[vb], %[y]\n\t"
        EV_RQ("c0", "[%[vb]]")
        "ldr %[c0], %[ys]\n\t"
        EV_RQ("c1", "[%[vb], %[c0]]")
        EV_RQ("c2", "[%[vb], %[c0], lsl #1]")
        "add %[c1], %[c0], %[c0], lsl #1\n\t"
        EV_RQ("c3", "[%[vb], %[c1]]")
        "ldrd %[ua], %[ub], [%[up]], #8\n\t"
        "ldr %[va], [%[up]], #4\n\t"
        "ldr %[c2], %[ych]\n\t"
        "add %[vb], %[vb], %[c2]\n\t"
        EV_RQ("c4", "[%[vb]]")
        EV_RQ("c5", "[%[vb], %[c0]]")
        EV_RQ("c6", "[%[vb], %[c0], lsl #1]")
        EV_RQ("c7", "[%[vb], %[c1]]")
        "add %[vb], %[vb], %[c2]\n\t"
        "str %[vb], %[y]\n\t"
        "ldr %[ua], %[we]\n\t"
        "cmp %[up], %[ua]\n\t"
        "bne .Lpair%="
        : [c0] "=&r"(c0), [c1] "=&r"(c1), [c2] "=&r"(c2), [c3] "=&r"(c3), [c4] "=&r"(c4), [c5] "=&r"(c5),
          [c6] "=&r"(c6), [c7] "=&r"(c7), [up] "+r"(up), [vp] "=&r"(vp), [ua] "=&r"(ua), [ub] "=&r"(ub),
          [va] "=&r"(va), [vb] "=&r"(vb), [y] "+m"(m.y)
        : [s] "m"(m.s), [se] "m"(m.se), [we] "m"(m.we), [skip] "m"(m.skip), [ys] "m"(m.ys), [ych] "m"(m.ych)
        : "cc", "memory");
#undef EV_STEP
#undef EV_RQ
#else
    for (int32_t p = 0; p < npairs; p++, y += 2 * ych) {
        const int32_t b0 = (int32_t)ev_ld32(w), b1 = (int32_t)ev_ld32(w + 2);
        int32_t acc[8] = {b0, b0, b0, b0, b1, b1, b1, b1};
        ev_dot_2x4(w + 4, s, steps, acc);
        w += 4 + 4 * steps;
        for (int32_t c = 0; c < 2; c++, w += 6) {
            const ev_rq2_t q = {(int32_t)ev_ld32(w), (int32_t)ev_ld32(w + 2), (int32_t)ev_ld32(w + 4)};
            for (int32_t j = 0; j < 4; j++) y[c * ych + j * ys] = ev_rq2(acc[4 * c + j], q);
        }
    }
#endif
}

/* Output channels 0 .. nch − 1 of the pair blocks at w (an odd last channel with a zero row) × the quad operand
 * s (`np` of its vectors real), requantized with ev_rq2 and stored: channel c's output j at y + c·ych + j·ys.
 * A short block or an odd last channel goes through a buffer. */
static __attribute__((unused)) void ev_pairs16_rq2(const int16_t *w, int32_t k16, const int16_t *s, int32_t np,
                                                 int8_t *y, int32_t ys, int32_t ych, int32_t nch) {
    const int32_t full = np == 4 ? nch >> 1 : 0;
    if (full) ev_run_pairs(w, s, k16 >> 1, y, ys, ych, full);
    for (int32_t c = 2 * full; c < nch; c += 2) {
        int8_t t[8];
        ev_run_pairs(w + (c >> 1) * EV_PAIR16_SIZE(k16), s, k16 >> 1, t, 1, 4, 1);
        for (int32_t j = 0; j < np; j++) {
            y[c * ych + j * ys] = t[j];
            if (c + 1 < nch) y[(c + 1) * ych + j * ys] = t[4 + j];
        }
    }
}

/* The same for any requantization (not ev_rq2_ok, or sums beyond ±2^29): the sums start at 0 and ev_store4
 * requantizes them, halved (the weights are doubled); bias / mult / shift point at channel 0's entries, bias may
 * be NULL. */
static __attribute__((unused)) void ev_pairs16(const int16_t *w, int32_t k16, const int16_t *s, int32_t np, int rq,
                                             int fast, const int32_t *bias, const int32_t *mult,
                                             const int32_t *shift, int32_t zp, int8_t *y, int32_t ys, int32_t ych,
                                             int32_t nch) {
    for (int32_t c = 0; c < nch; c += 2, w += EV_PAIR16_SIZE(k16), y += 2 * ych) {
        int32_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        ev_dot_2x4(w + 4, s, k16 >> 1, acc);
        for (int32_t j = 0; j < 8; j++) acc[j] >>= 1; /* exact: the sums are even and 2·sum fits (k ≤ 32768) */
        ev_store4(acc, np, rq, fast, bias ? bias[c] : 0, mult[c], shift[c], zp, y, ys);
        if (c + 1 < nch)
            ev_store4(acc + 4, np, rq, fast, bias ? bias[c + 1] : 0, mult[c + 1], shift[c + 1], zp, y + ych, ys);
    }
}

#endif /* EV_COMMON_H */
