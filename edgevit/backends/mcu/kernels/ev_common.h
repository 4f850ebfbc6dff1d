/* Private to the kernels (not part of the API): the int8 · int16 dot products of conv2d, linear and matmul
 * and a fast int32 requantization used by every op with int32 sums, each in an ACLE SIMD version
 * (__ARM_FEATURE_DSP) and a portable C version.
 *
 * The int16 operand (x − zero point, built by the kernel in its scratch) is stored PERMUTED: the first
 * k & ~3 values in blocks of 4 as (v0, v2, v1, v3), the tail in natural order. That is the order in
 * which __sxtb16(w) = (w0, w2) and __sxtb16(w ror 8) = (w1, w3) unpack 4 int8 read as one word, so the
 * SIMD loop needs no shuffle: per 4 values 1 load + 2 SXTB16 + 2 SMLAD on the int8 side and 2 loads on
 * the int16 side. Both builds use the same layout, so the host tests cover the scratch builders too.
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
/* Compiler barrier inside an unrolled step: without it GCC's pre-RA scheduler hoists all the loads of the
 * step, needs more than the 14 usable registers and spills inside the loop (ev_dot_4w: 24 instructions
 * per 16 MACs with the barriers, 28–31 with spills). It emits no instruction. */
#define EV_STEP_BARRIER() __asm__ volatile("" ::: "memory")
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

/* Swap the middle two of every block of 4 in s[0 .. k & ~3): natural → permuted layout (self-inverse). */
static inline void ev_permute4(int16_t *s, int32_t k) {
    for (int32_t i = 0; i + 4 <= k; i += 4) {
        int16_t t = s[i + 1];
        s[i + 1] = s[i + 2];
        s[i + 2] = t;
    }
}

/* s[0..k) = permuted (x[i] − zp) for a contiguous int8 row x. */
static inline void ev_expand_row(const int8_t *x, int32_t k, int32_t zp, int16_t *s) {
    int32_t i = 0;
#if EV_SIMD
    const uint32_t zz = ((uint32_t)zp & 0xFFFFu) * 0x10001u; /* (zp, zp) — x − zp ∈ [−255, 255] fits int16 */
    for (; i + 4 <= k; i += 4) {
        uint32_t v = ev_ld32(x + i);
        ev_st32(s + i, (uint32_t)__ssub16(ev_lo(v), (int32_t)zz));
        ev_st32(s + i + 2, (uint32_t)__ssub16(ev_hi(v), (int32_t)zz));
    }
#else
    for (; i + 4 <= k; i += 4) {
        s[i] = (int16_t)(x[i] - zp);
        s[i + 1] = (int16_t)(x[i + 2] - zp);
        s[i + 2] = (int16_t)(x[i + 1] - zp);
        s[i + 3] = (int16_t)(x[i + 3] - zp);
    }
#endif
    for (; i < k; i++) s[i] = (int16_t)(x[i] - zp);
}

/* acc[j] += Σ_i w[j·ws + i] · s[i] for 4 int8 rows w (conv2d / linear: 4 output channels share the loads
 * of s; 24 instructions per 16 MACs on M7). */
static inline void ev_dot_4w(const int8_t *w, int32_t ws, const int16_t *s, int32_t k, int32_t acc[4]) {
    const int8_t *w0 = w, *w1 = w + ws, *w2 = w + 2 * ws, *w3 = w + 3 * ws;
    int32_t i = 0, k4 = k & ~3;
#if EV_SIMD
    /* s is the kernel's word-aligned scratch: its pairs are read as aligned words (LDRD) */
    const int16_t *sp = (const int16_t *)__builtin_assume_aligned(s, 4), *se = sp + k4;
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (; sp < se; sp += 4, w0 += 4, w1 += 4, w2 += 4, w3 += 4) {
        int32_t s02 = (int32_t)ev_ld32(sp), s13 = (int32_t)ev_ld32(sp + 2);
        uint32_t v;
        v = ev_ld32(w0); a0 = __smlad(ev_lo(v), s02, a0); a0 = __smlad(ev_hi(v), s13, a0); EV_STEP_BARRIER();
        v = ev_ld32(w1); a1 = __smlad(ev_lo(v), s02, a1); a1 = __smlad(ev_hi(v), s13, a1); EV_STEP_BARRIER();
        v = ev_ld32(w2); a2 = __smlad(ev_lo(v), s02, a2); a2 = __smlad(ev_hi(v), s13, a2); EV_STEP_BARRIER();
        v = ev_ld32(w3); a3 = __smlad(ev_lo(v), s02, a3); a3 = __smlad(ev_hi(v), s13, a3);
    }
    w0 -= k4; w1 -= k4; w2 -= k4; w3 -= k4;
    i = k4;
#else
    uint32_t a0 = (uint32_t)acc[0], a1 = (uint32_t)acc[1], a2 = (uint32_t)acc[2], a3 = (uint32_t)acc[3];
    for (; i < k4; i += 4) {
        int32_t s0 = s[i], s2 = s[i + 1], s1 = s[i + 2], s3 = s[i + 3];
        a0 += (uint32_t)(w0[i] * s0 + w0[i + 1] * s1 + w0[i + 2] * s2 + w0[i + 3] * s3);
        a1 += (uint32_t)(w1[i] * s0 + w1[i + 1] * s1 + w1[i + 2] * s2 + w1[i + 3] * s3);
        a2 += (uint32_t)(w2[i] * s0 + w2[i + 1] * s1 + w2[i + 2] * s2 + w2[i + 3] * s3);
        a3 += (uint32_t)(w3[i] * s0 + w3[i + 1] * s1 + w3[i + 2] * s2 + w3[i + 3] * s3);
    }
#endif
    for (; i < k; i++) {
        int32_t si = s[i];
        a0 += w0[i] * si; a1 += w1[i] * si; a2 += w2[i] * si; a3 += w3[i] * si;
    }
    acc[0] = (int32_t)a0; acc[1] = (int32_t)a1; acc[2] = (int32_t)a2; acc[3] = (int32_t)a3;
}

/* acc[2r + j] += Σ_i a[r·as + i] · s[j·ss + i] for 2 int8 rows a × 2 int16 rows s (matmul: each a row
 * and each s row is loaded once for two products: ~23 instructions per 16 MACs on M7). The s rows may
 * be unaligned (odd k): ARMv7-M LDR handles it. */
static inline void ev_dot_2x2(const int8_t *a, int32_t as, const int16_t *s, int32_t ss, int32_t k, int32_t acc[4]) {
    const int8_t *a0 = a, *a1 = a + as;
    const int16_t *s0 = s, *s1 = s + ss;
    int32_t i = 0, k4 = k & ~3;
#if EV_SIMD
    int32_t c00 = acc[0], c01 = acc[1], c10 = acc[2], c11 = acc[3];
    for (; i < k4; i += 4) {
        uint32_t v0 = ev_ld32(a0 + i), v1 = ev_ld32(a1 + i);
        int32_t l0 = ev_lo(v0), h0 = ev_hi(v0), l1 = ev_lo(v1), h1 = ev_hi(v1), t;
        t = (int32_t)ev_ld32(s0 + i); c00 = __smlad(l0, t, c00); c10 = __smlad(l1, t, c10);
        t = (int32_t)ev_ld32(s0 + i + 2); c00 = __smlad(h0, t, c00); c10 = __smlad(h1, t, c10);
        EV_STEP_BARRIER();
        t = (int32_t)ev_ld32(s1 + i); c01 = __smlad(l0, t, c01); c11 = __smlad(l1, t, c11);
        t = (int32_t)ev_ld32(s1 + i + 2); c01 = __smlad(h0, t, c01); c11 = __smlad(h1, t, c11);
    }
#else
    uint32_t c00 = (uint32_t)acc[0], c01 = (uint32_t)acc[1], c10 = (uint32_t)acc[2], c11 = (uint32_t)acc[3];
    for (; i < k4; i += 4) {
        /* a in the permuted order of s: (a[i], a[i+2], a[i+1], a[i+3]) */
        int32_t p0 = a0[i], p1 = a0[i + 2], p2 = a0[i + 1], p3 = a0[i + 3];
        int32_t q0 = a1[i], q1 = a1[i + 2], q2 = a1[i + 1], q3 = a1[i + 3];
        c00 += (uint32_t)(p0 * s0[i] + p1 * s0[i + 1] + p2 * s0[i + 2] + p3 * s0[i + 3]);
        c01 += (uint32_t)(p0 * s1[i] + p1 * s1[i + 1] + p2 * s1[i + 2] + p3 * s1[i + 3]);
        c10 += (uint32_t)(q0 * s0[i] + q1 * s0[i + 1] + q2 * s0[i + 2] + q3 * s0[i + 3]);
        c11 += (uint32_t)(q0 * s1[i] + q1 * s1[i + 1] + q2 * s1[i + 2] + q3 * s1[i + 3]);
    }
#endif
    for (; i < k; i++) {
        c00 += a0[i] * s0[i]; c01 += a0[i] * s1[i]; c10 += a1[i] * s0[i]; c11 += a1[i] * s1[i];
    }
    acc[0] = (int32_t)c00; acc[1] = (int32_t)c01; acc[2] = (int32_t)c10; acc[3] = (int32_t)c11;
}

/* Σ_i w[i] · s[i], one row (channel / column tails). */
static inline int32_t ev_dot_1(const int8_t *w, const int16_t *s, int32_t k) {
    int32_t i = 0, k4 = k & ~3;
#if EV_SIMD
    int32_t a = 0;
    for (; i < k4; i += 4) {
        uint32_t v = ev_ld32(w + i);
        a = __smlad(ev_lo(v), (int32_t)ev_ld32(s + i), a);
        a = __smlad(ev_hi(v), (int32_t)ev_ld32(s + i + 2), a);
    }
#else
    uint32_t a = 0;
    for (; i < k4; i += 4)
        a += (uint32_t)(w[i] * s[i] + w[i + 2] * s[i + 1] + w[i + 1] * s[i + 2] + w[i + 3] * s[i + 3]);
#endif
    for (; i < k; i++) a += w[i] * s[i];
    return (int32_t)a;
}

#endif /* EV_COMMON_H */
