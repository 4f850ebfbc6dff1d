/* Private to the kernels (not part of the API): the int8 · int16 dot product of conv2d, linear and matmul and
 * fast int32 requantizations used by every op with int32 sums, each in an ACLE SIMD version (__ARM_FEATURE_DSP)
 * and a portable C version.
 *
 * The int16 operand (x − zero point, built by the kernel in its scratch) holds FOUR vectors (pixels, rows or
 * columns) interleaved by ev_pack4, each PERMUTED in blocks of 4 as (v0, v2, v1, v3): the order in which
 * __sxtb16(w) = (w0, w2) and __sxtb16(w ror 8) = (w1, w3) unpack 4 int8 weights read as one word, so the SIMD
 * loop needs no shuffle, and each weight word is unpacked once for 4 outputs: per 4 values 1 LDR + 2 SXTB16 +
 * 4 LDRD + 8 SMLAD (~1 MAC per instruction). Both builds use the same layout, so the host tests cover the
 * packing too. All sums are exact integers: any accumulation order gives the reference's bits.
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

/* The k % 4 tail of the 1-row × 4-vector dot products below (int8 or int16 weights `w`, scratch `sp` at value
 * i), then the four sums back into acc. */
#define EV_DOT_1X4_TAIL()                                                                                       \
    do {                                                                                                        \
        for (; i < k; i++, sp += 4) {                                                                           \
            const int32_t p = w[i];                                                                             \
            c0 += (uint32_t)(p * sp[0]); c1 += (uint32_t)(p * sp[1]);                                           \
            c2 += (uint32_t)(p * sp[2]); c3 += (uint32_t)(p * sp[3]);                                           \
        }                                                                                                       \
        acc[0] = (int32_t)c0; acc[1] = (int32_t)c1; acc[2] = (int32_t)c2; acc[3] = (int32_t)c3;                \
    } while (0)

/* Four int16 vectors (v_j[i] = x_j[i·st] − zp, x_j = xv[j]), i < k, interleaved for ev_dot_1x4: per block of
 * 4 values the 4 of v_0, of v_1, of v_2, of v_3, each permuted (v0, v2, v1, v3); then the k % 4 tail as
 * quadruples (v_0[i], v_1[i], v_2[i], v_3[i]). 4k values. */
static inline void ev_pack4(const int8_t *const xv[4], int32_t st, int32_t k, int32_t zp, int16_t *s) {
    const int8_t *x0 = xv[0], *x1 = xv[1], *x2 = xv[2], *x3 = xv[3];
    int32_t i = 0;
#if EV_SIMD
    const int32_t zz = (int32_t)(((uint32_t)zp & 0xFFFFu) * 0x10001u);
    if (st == 1) { /* contiguous vectors: one word of each */
        for (; i + 4 <= k; i += 4, s += 16) {
            const uint32_t v0 = ev_ld32(x0 + i), v1 = ev_ld32(x1 + i), v2 = ev_ld32(x2 + i), v3 = ev_ld32(x3 + i);
            ev_st32(s, (uint32_t)__ssub16(ev_lo(v0), zz));
            ev_st32(s + 2, (uint32_t)__ssub16(ev_hi(v0), zz));
            ev_st32(s + 4, (uint32_t)__ssub16(ev_lo(v1), zz));
            ev_st32(s + 6, (uint32_t)__ssub16(ev_hi(v1), zz));
            ev_st32(s + 8, (uint32_t)__ssub16(ev_lo(v2), zz));
            ev_st32(s + 10, (uint32_t)__ssub16(ev_hi(v2), zz));
            ev_st32(s + 12, (uint32_t)__ssub16(ev_lo(v3), zz));
            ev_st32(s + 14, (uint32_t)__ssub16(ev_hi(v3), zz));
        }
    } else if (x1 == x0 + 1 && x2 == x0 + 2 && x3 == x0 + 3) {
        /* 4 adjacent pixels of NCHW: one word holds the 4 vectors' values at i; 4 words (i .. i+3) are
         * transposed with SXTB16 and halfword packing */
        for (; i + 4 <= k; i += 4, s += 16) {
            const int8_t *a = x0 + i * st;
            const uint32_t u0 = ev_ld32(a), u1 = ev_ld32(a + st), u2 = ev_ld32(a + 2 * st), u3 = ev_ld32(a + 3 * st);
            /* lo(u_c) = (v_0, v_2) at i+c, hi(u_c) = (v_1, v_3) at i+c, minus zp */
            const uint32_t l0 = (uint32_t)__ssub16(ev_lo(u0), zz), l1 = (uint32_t)__ssub16(ev_lo(u1), zz);
            const uint32_t l2 = (uint32_t)__ssub16(ev_lo(u2), zz), l3 = (uint32_t)__ssub16(ev_lo(u3), zz);
            const uint32_t h0 = (uint32_t)__ssub16(ev_hi(u0), zz), h1 = (uint32_t)__ssub16(ev_hi(u1), zz);
            const uint32_t h2 = (uint32_t)__ssub16(ev_hi(u2), zz), h3 = (uint32_t)__ssub16(ev_hi(u3), zz);
            /* v_j's permuted block: (c0, c2), (c1, c3) */
            ev_st32(s, (l0 & 0xFFFFu) | (l2 << 16));
            ev_st32(s + 2, (l1 & 0xFFFFu) | (l3 << 16));
            ev_st32(s + 4, (h0 & 0xFFFFu) | (h2 << 16));
            ev_st32(s + 6, (h1 & 0xFFFFu) | (h3 << 16));
            ev_st32(s + 8, (l0 >> 16) | (l2 & 0xFFFF0000u));
            ev_st32(s + 10, (l1 >> 16) | (l3 & 0xFFFF0000u));
            ev_st32(s + 12, (h0 >> 16) | (h2 & 0xFFFF0000u));
            ev_st32(s + 14, (h1 >> 16) | (h3 & 0xFFFF0000u));
        }
    }
#endif
    for (; i + 4 <= k; i += 4, s += 16) {
        for (int32_t j = 0; j < 4; j++) {
            const int8_t *a = xv[j] + i * st;
            s[4 * j] = (int16_t)(a[0] - zp);
            s[4 * j + 1] = (int16_t)(a[2 * st] - zp);
            s[4 * j + 2] = (int16_t)(a[st] - zp);
            s[4 * j + 3] = (int16_t)(a[3 * st] - zp);
        }
    }
    for (; i < k; i++, s += 4) {
        s[0] = (int16_t)(x0[i * st] - zp);
        s[1] = (int16_t)(x1[i * st] - zp);
        s[2] = (int16_t)(x2[i * st] - zp);
        s[3] = (int16_t)(x3[i * st] - zp);
    }
}

/* acc[j] += Σ_i w[i] · v_j[i] for one int8 row w × the 4 int16 vectors packed in s by ev_pack4: each weight
 * word is loaded and unpacked once for 4 products (per 4 values: 1 LDR + 2 SXTB16 + 4 LDRD + 8 SMLAD). */
EV_ALWAYS_INLINE void ev_dot_1x4_inl(const int8_t *w, const int16_t *s, int32_t k, int32_t acc[4]) {
    int32_t i = 0;
    const int32_t k4 = k & ~3;
#if EV_SIMD
    const int16_t *sp = s;
    int32_t c0 = acc[0], c1 = acc[1], c2 = acc[2], c3 = acc[3];
    /* LDRD with post-increment (GCC splits the pairs into 2 LDRs and adds the pointer update): the memory
     * clobber keeps them after the scratch stores of the packing (s is word aligned) */
#define EV_DOT_1X4_STEP(j)                                                                                      \
    do {                                                                                                        \
        const uint32_t v = ev_ld32(w + (j));                                                                    \
        const int32_t l = ev_lo(v), h = ev_hi(v);                                                               \
        int32_t a, b;                                                                                           \
        EV_LDRD_POST(a, b, sp); c0 = __smlad(l, a, c0); c0 = __smlad(h, b, c0);                                 \
        EV_LDRD_POST(a, b, sp); c1 = __smlad(l, a, c1); c1 = __smlad(h, b, c1);                                 \
        EV_LDRD_POST(a, b, sp); c2 = __smlad(l, a, c2); c2 = __smlad(h, b, c2);                                 \
        EV_LDRD_POST(a, b, sp); c3 = __smlad(l, a, c3); c3 = __smlad(h, b, c3);                                 \
    } while (0)
    for (; i + 8 <= k4; i += 8) { /* unrolled twice: 33 instructions per 32 MACs */
        EV_DOT_1X4_STEP(i);
        EV_DOT_1X4_STEP(i + 4);
    }
    if (i < k4) {
        EV_DOT_1X4_STEP(i);
        i += 4;
    }
#undef EV_DOT_1X4_STEP
#else
    const int16_t *sp = s;
    uint32_t c0 = (uint32_t)acc[0], c1 = (uint32_t)acc[1], c2 = (uint32_t)acc[2], c3 = (uint32_t)acc[3];
    for (; i < k4; i += 4, sp += 16) {
        const int32_t p0 = w[i], p1 = w[i + 2], p2 = w[i + 1], p3 = w[i + 3]; /* the permuted order of s */
        c0 += (uint32_t)(p0 * sp[0] + p1 * sp[1] + p2 * sp[2] + p3 * sp[3]);
        c1 += (uint32_t)(p0 * sp[4] + p1 * sp[5] + p2 * sp[6] + p3 * sp[7]);
        c2 += (uint32_t)(p0 * sp[8] + p1 * sp[9] + p2 * sp[10] + p3 * sp[11]);
        c3 += (uint32_t)(p0 * sp[12] + p1 * sp[13] + p2 * sp[14] + p3 * sp[15]);
    }
#endif
    EV_DOT_1X4_TAIL();
}

/* the same, left to the compiler to inline or not (ev_dot_1x4_inl: always inlined, for callers with few live values) */
static inline void ev_dot_1x4(const int8_t *w, const int16_t *s, int32_t k, int32_t acc[4]) { ev_dot_1x4_inl(w, s, k, acc); }

/* ev_dot_1x4 with the row pre-expanded to int16 (EV_WEIGHT16 layout, 4-byte aligned): per 4 values 1 + 4 LDRD and
 * 8 SMLAD. */
static inline void ev_dot16_1x4(const int16_t *w, const int16_t *s, int32_t k, int32_t acc[4]) {
    int32_t i = 0;
    const int32_t k4 = k & ~3;
    const int16_t *sp = s;
#if EV_SIMD
    const int16_t *wp = w;
    int32_t c0 = acc[0], c1 = acc[1], c2 = acc[2], c3 = acc[3];
#define EV_DOT16_1X4_STEP()                                                                                     \
    do {                                                                                                        \
        int32_t l, h, a, b;                                                                                     \
        EV_LDRD_POST(l, h, wp);                                                                                 \
        EV_LDRD_POST(a, b, sp); c0 = __smlad(l, a, c0); c0 = __smlad(h, b, c0);                                 \
        EV_LDRD_POST(a, b, sp); c1 = __smlad(l, a, c1); c1 = __smlad(h, b, c1);                                 \
        EV_LDRD_POST(a, b, sp); c2 = __smlad(l, a, c2); c2 = __smlad(h, b, c2);                                 \
        EV_LDRD_POST(a, b, sp); c3 = __smlad(l, a, c3); c3 = __smlad(h, b, c3);                                 \
    } while (0)
    for (; i + 8 <= k4; i += 8) { /* unrolled twice: 29 instructions per 32 MACs */
        EV_DOT16_1X4_STEP();
        EV_DOT16_1X4_STEP();
    }
    if (i < k4) {
        EV_DOT16_1X4_STEP();
        i += 4;
    }
#undef EV_DOT16_1X4_STEP
#else
    uint32_t c0 = (uint32_t)acc[0], c1 = (uint32_t)acc[1], c2 = (uint32_t)acc[2], c3 = (uint32_t)acc[3];
    for (; i < k4; i += 4, sp += 16) { /* w and s are both in the permuted order */
        const int32_t p0 = w[i], p1 = w[i + 1], p2 = w[i + 2], p3 = w[i + 3];
        c0 += (uint32_t)(p0 * sp[0] + p1 * sp[1] + p2 * sp[2] + p3 * sp[3]);
        c1 += (uint32_t)(p0 * sp[4] + p1 * sp[5] + p2 * sp[6] + p3 * sp[7]);
        c2 += (uint32_t)(p0 * sp[8] + p1 * sp[9] + p2 * sp[10] + p3 * sp[11]);
        c3 += (uint32_t)(p0 * sp[12] + p1 * sp[13] + p2 * sp[14] + p3 * sp[15]);
    }
#endif
    EV_DOT_1X4_TAIL();
}

/* ev_dot16_1x4 for TWO weight rows (channels) w0, w1 at once: acc0[j] += Σ w0·v_j, acc1[j] += Σ w1·v_j. The 4
 * vectors are taken as two pairs (v_0, v_1) then (v_2, v_3), so per pair the 4 sums, the 2 rows' 4 weight
 * words and a pair's 4 scratch words fit the registers: per 4 values 2 LDRD of weights + 2 LDRD of scratch +
 * 8 SMLAD (12 instructions per 16 MACs). */
EV_ALWAYS_INLINE void ev_dot16_2x2(const int16_t *w0, const int16_t *w1, const int16_t *s, int32_t k, int32_t pr,
                                   int32_t acc0[4], int32_t acc1[4]) {
    const int32_t k4 = k & ~3;
    {
        int32_t i = 0;
#if EV_SIMD
        const int16_t *wp0 = w0, *wp1 = w1, *sp = s + 4 * pr;
        const int16_t *const se = sp + 4 * k4;
        int32_t c00 = acc0[pr], c01 = acc0[pr + 1], c10 = acc1[pr], c11 = acc1[pr + 1];
        int32_t l0, h0, a, b, c, d;
        /* one asm block: GCC's own allocation of the 14 live registers spills in the loop */
#define EV_D16_STEP                                                                                            \
    "ldrd %[l0], %[h0], [%[wp0]], #8\n\t"                                                                       \
    "ldrd %[a], %[b], [%[sp], #8]\n\t"                                                                          \
    "ldrd %[c], %[d], [%[sp]], #32\n\t"                                                                         \
    "smlad %[c00], %[l0], %[c], %[c00]\n\t"                                                                     \
    "smlad %[c00], %[h0], %[d], %[c00]\n\t"                                                                     \
    "smlad %[c01], %[l0], %[a], %[c01]\n\t"                                                                     \
    "smlad %[c01], %[h0], %[b], %[c01]\n\t"                                                                     \
    "ldrd %[l0], %[h0], [%[wp1]], #8\n\t"                                                                       \
    "smlad %[c10], %[l0], %[c], %[c10]\n\t"                                                                     \
    "smlad %[c10], %[h0], %[d], %[c10]\n\t"                                                                     \
    "smlad %[c11], %[l0], %[a], %[c11]\n\t"                                                                     \
    "smlad %[c11], %[h0], %[b], %[c11]\n\t"
#define EV_D16_OPS                                                                                             \
    : [c00] "+r"(c00), [c01] "+r"(c01), [c10] "+r"(c10), [c11] "+r"(c11), [wp0] "+r"(wp0), [wp1] "+r"(wp1),  \
      [sp] "+r"(sp), [l0] "=&r"(l0), [h0] "=&r"(h0), [a] "=&r"(a), [b] "=&r"(b), [c] "=&r"(c), [d] "=&r"(d)
        if (k4 & 4) __asm__ volatile(EV_D16_STEP EV_D16_OPS : : "memory");
        if (k4 & 8) __asm__ volatile(EV_D16_STEP EV_D16_STEP EV_D16_OPS : : "memory");
        if (sp != se) /* unrolled 4 times: 51 instructions per 64 MACs */
            __asm__ volatile("1:\n\t" EV_D16_STEP EV_D16_STEP EV_D16_STEP EV_D16_STEP "cmp %[sp], %[se]\n\t"
                             "bne 1b" EV_D16_OPS : [se] "r"(se) : "memory", "cc");
#undef EV_D16_STEP
#undef EV_D16_OPS
        i = k4;
#else
        const int16_t *sp = s + 4 * pr;
        uint32_t c00 = (uint32_t)acc0[pr], c01 = (uint32_t)acc0[pr + 1], c10 = (uint32_t)acc1[pr],
                 c11 = (uint32_t)acc1[pr + 1];
        for (; i < k4; i += 4, sp += 16) { /* w and s are both in the permuted order */
            c00 += (uint32_t)(w0[i] * sp[0] + w0[i + 1] * sp[1] + w0[i + 2] * sp[2] + w0[i + 3] * sp[3]);
            c01 += (uint32_t)(w0[i] * sp[4] + w0[i + 1] * sp[5] + w0[i + 2] * sp[6] + w0[i + 3] * sp[7]);
            c10 += (uint32_t)(w1[i] * sp[0] + w1[i + 1] * sp[1] + w1[i + 2] * sp[2] + w1[i + 3] * sp[3]);
            c11 += (uint32_t)(w1[i] * sp[4] + w1[i + 1] * sp[5] + w1[i + 2] * sp[6] + w1[i + 3] * sp[7]);
        }
#endif
        for (const int16_t *t = s + 4 * k4 + pr; i < k; i++, t += 4) {
            c00 += (uint32_t)(w0[i] * t[0]); c01 += (uint32_t)(w0[i] * t[1]);
            c10 += (uint32_t)(w1[i] * t[0]); c11 += (uint32_t)(w1[i] * t[1]);
        }
        acc0[pr] = (int32_t)c00; acc0[pr + 1] = (int32_t)c01; acc1[pr] = (int32_t)c10; acc1[pr + 1] = (int32_t)c11;
    }
}
/* the 4 outputs of one channel / row for 4 pixels / rows / columns (`np` of them real, np ≥ 1), at y + j·ys */
EV_ALWAYS_INLINE void ev_store4(const int32_t acc[4], int32_t np, int rq, int fast, int32_t bias, int32_t mult, int32_t shift,
                          int32_t zp, int8_t *y, int32_t ys) {
    if (rq) {
        const ev_rq_t q = ev_rq_make(mult, shift, zp);
        if (np == 4) { /* unrolled: the sums stay in registers */
            y[0] = ev_rq(ev_sat_add(acc[0], bias), q);
            y[ys] = ev_rq(ev_sat_add(acc[1], bias), q);
            y[2 * ys] = ev_rq(ev_sat_add(acc[2], bias), q);
            y[3 * ys] = ev_rq(ev_sat_add(acc[3], bias), q);
        } else {
            for (int32_t j = 0; j < np; j++) y[j * ys] = ev_rq(ev_sat_add(acc[j], bias), q);
        }
    } else {
        for (int32_t j = 0; j < np; j++) y[j * ys] = ev_requant(fast, acc[j], bias, mult, shift, zp);
    }
}


/* npairs pairs of output channels: pair p's weight rows w + 2p·k16 and w + (2p+1)·k16 (EV_WEIGHT16 layout) × the 4
 * vectors packed in s, requantized and stored: channel c's output j at y + c·ych + j·ys (bias / mult / shift point
 * at channel 0's entries; bias may be NULL). Not inlined: its callers' live values would crowd the 14 registers of
 * the asm loop. */
static __attribute__((noinline, unused)) void ev_pairs16(const int16_t *w, int32_t k16, const int16_t *s, int32_t k,
                                                       int32_t np, int rq, int fast, const int32_t *bias,
                                                       const int32_t *mult, const int32_t *shift, int32_t zp,
                                                       int8_t *y, int32_t ys, int32_t ych, int32_t npairs) {
    for (int32_t p = 0; p < npairs; p++, w += 2 * k16, mult += 2, shift += 2, y += 2 * ych) {
        int32_t acc0[4] = {0, 0, 0, 0}, acc1[4] = {0, 0, 0, 0};
        ev_dot16_2x2(w, w + k16, s, k, 0, acc0, acc1);
        ev_dot16_2x2(w, w + k16, s, k, 2, acc0, acc1);
        ev_store4(acc0, np, rq, fast, bias ? bias[2 * p] : 0, mult[0], shift[0], zp, y, ys);
        ev_store4(acc1, np, rq, fast, bias ? bias[2 * p + 1] : 0, mult[1], shift[1], zp, y + ych, ys);
    }
}

#endif /* EV_COMMON_H */
