/* ev_softmax, ev_layernorm ↔ integer_ops.softmax / layernorm (both in-place safe: two passes per row,
 * the second reads x[i] before writing y[i]). */
#include "ev_kernels.h"
#include "ev_common.h"

/* max of a row (len ≥ 1) */
static int32_t sm_max(const int8_t *x, int32_t len) {
    int32_t mx = -128, i = 0;
#if EV_SIMD
    if (len >= 4) { /* bytewise signed max of words: SSUB8 sets GE where v ≥ m, SEL takes those bytes of v */
        uint32_t m = ev_ld32(x);
        for (i = 4; i + 4 <= len; i += 4) {
            const uint32_t v = ev_ld32(x + i);
            uint32_t t;
            __asm__("ssub8 %0, %2, %1\n\tsel %1, %2, %1" : "=&r"(t), "+r"(m) : "r"(v) : "cc"); /* GE flags */
        }
        for (int32_t b = 0; b < 32; b += 8) mx = (int8_t)(m >> b) > mx ? (int8_t)(m >> b) : mx;
    }
#endif
    for (; i < len; i++) mx = x[i] > mx ? x[i] : mx;
    return mx;
}

void ev_softmax(int32_t rows, int32_t len, const uint16_t exp_table[256], const int8_t *x, int8_t *y) {
    for (int32_t r = 0; r < rows; r++, x += len, y += len) {
        const uint16_t *e = exp_table + sm_max(x, len); /* e[−x] = exp_table[max − x] */
        uint32_t total = 0; /* ≤ len·65535: fits for len ≤ 65537 */
        for (int32_t i = 0; i < len; i++) total += e[-x[i]];
        if (total >= 4 && total < (1u << 27)) {
            /* q = floor(N / T), N = 256·e + T/2 < 2^29, as floor(N·m / 2^(30+s)) with T ∈ [2^s, 2^(s+1)),
             * m = ceil(2^(30+s) / T) ≤ 2^30: exact as N·(m·T − 2^(30+s)) < N·T < 2^(30+s). SMMLA takes the high
             * word and adds −128·2^(s−2) (s ∈ [2, 26]), so y = SSAT(·>> (s − 2), 8), no division per value. */
            const int32_t s = 31 - __builtin_clz(total), sh = s - 2;
            const int32_t m = (int32_t)((((uint64_t)1 << (30 + s)) + total - 1u) / total);
            const int32_t acc = -(128 << sh);
            const uint32_t half = total / 2u;
            for (int32_t i = 0; i < len; i++) {
                const int32_t num = (int32_t)(e[-x[i]] * 256u + half);
#if EV_SIMD
                int32_t h;
                __asm__("smmla %0, %1, %2, %3" : "=r"(h) : "r"(num), "r"(m), "r"(acc));
                y[i] = (int8_t)__ssat(h >> sh, 8);
#else
                y[i] = ev_clamp8(((((int64_t)num * m) >> 32) + acc) >> sh);
#endif
            }
        } else {
            for (int32_t i = 0; i < len; i++) {
                /* numpy's integer division by 0 gives 0 (only with an all-zero table) */
                const uint32_t q = total ? ((uint32_t)e[-x[i]] * 256u + total / 2u) / total : 0u;
                y[i] = ev_clamp8((int64_t)q - 128);
            }
        }
    }
}

/* scheme.div_round for b > 0: sign(a)·((|a| + b/2) / b) */
static int64_t div_round(int64_t a, int64_t b) {
    uint64_t q = ((a < 0 ? (uint64_t)0 - (uint64_t)a : (uint64_t)a) + (uint64_t)(b / 2)) / (uint64_t)b;
    return a < 0 ? -(int64_t)q : (int64_t)q;
}

/* exact floor(√v), bit by bit (no float) */
static int64_t isqrt64(uint64_t v) {
    uint64_t r = 0, bit = (uint64_t)1 << 62;
    while (bit > v) bit >>= 2;
    for (; bit; bit >>= 2) {
        if (v >= r + bit) {
            v -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
    }
    return (int64_t)r;
}

/* the same for v < 2^32, from v's top bit pair */
static int32_t isqrt32(uint32_t v) {
    uint32_t r = 0, bit = 1u << ((31 - __builtin_clz(v)) & ~1);
    for (; bit; bit >>= 2) {
        if (v >= r + bit) {
            v -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
    }
    return (int32_t)r;
}

#define LN_VAR_BITS 16
#define LN_OUT_BITS 12
#define LN_RECIP_BITS 16

/* RDBPOT(v, 16) when the result fits int32: the low word and the sign are enough for the rounding */
static inline int32_t rdbpot16(int64_t v) {
    return (int32_t)(v >> 16) + (((uint32_t)v & 0xFFFFu) > 0x7FFFu + (uint32_t)(v < 0));
}

/* (Σ x, Σ x²) of a row; both exact in int32 for n < 131 072 */
static void ln_sums(const int8_t *x, int32_t n, int32_t *sum_out, int32_t *sq_out) {
    int32_t sum = 0, sq = 0, i = 0;
#if EV_SIMD
    for (; i + 4 <= n; i += 4) { /* per 4 values: LDR, 2 SXTB16, 4 SMLAD */
        const uint32_t v = ev_ld32(x + i);
        const int32_t l = ev_lo(v), h = ev_hi(v);
        sum = __smlad(l, 0x00010001, sum);
        sum = __smlad(h, 0x00010001, sum);
        sq = __smlad(l, l, sq);
        sq = __smlad(h, h, sq);
    }
#endif
    for (; i < n; i++) {
        sum += x[i];
        sq += x[i] * x[i];
    }
    *sum_out = sum;
    *sq_out = sq;
}

/* hi32(a·b + 2^31): SMMULR */
static inline int32_t ln_smmulr(int32_t a, int32_t b) {
#if EV_SIMD
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 31)) >> 32);
#endif
}

/* Whether some x ∈ [−128, 127] with d = n·x − sum < 0 makes d·R a tie of RDBPOT(·, 16): d·R ≡ 2^15 (mod 2^16),
 * i.e. x·a ≡ t with a = n·R, t = sum·R + 2^15 (mod 2^16). With a = 2^k·a' (a' odd) that needs 2^k | t, then
 * x ≡ (t / 2^k)·a'^−1 (mod 2^(16−k)): one candidate in the int8 range when 16 − k ≥ 8 (x0 or x0 − 2^(16−k)),
 * and for k > 8 the answer is a conservative yes. */
static int ln_negative_tie(int32_t n, int32_t sum, uint32_t recip) {
    const uint32_t a = ((uint32_t)n * recip) & 0xFFFFu, t = ((uint32_t)sum * recip + 0x8000u) & 0xFFFFu;
    uint32_t k = 0;
    while (k < 16 && !((a >> k) & 1u)) k++;
    if (t & ((1u << k) - 1u)) return 0;
    if (k > 8) return 1;
    const uint32_t odd = a >> k, mod = 1u << (16 - k);
    uint32_t inv = odd; /* Newton: correct to 3, 6, 12, 24 bits */
    for (int it = 0; it < 3; it++) inv *= 2u - odd * inv;
    const int32_t x0 = (int32_t)(((t >> k) * inv) & (mod - 1u));
    return (x0 <= 127 && n * x0 < sum) || (x0 - (int32_t)mod >= -128 && n * (x0 - (int32_t)mod) < sum);
}

/* clamp8(z + RDBPOT(SRDHM(u, M), n)) from x2 = 2u (|u| < 2^29) and q = (M, c, n) of rq2 as ev_rq2 does, for any
 * M ≠ INT32_MIN: neg is −1 or 0 as the sign of u·M (either when u = 0: SRDHM is 0, both give z). */
static inline int8_t ln_rq(int32_t x2, ev_rq2_t q, int32_t neg) {
#if EV_SIMD
    int32_t h;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(h) : "r"(x2), "r"(q.mult), "r"(q.c));
    return (int8_t)__ssat((h + neg) >> q.n, 8);
#else
    const int32_t h = (int32_t)(((int64_t)x2 * q.mult + ((int64_t)1 << 31)) >> 32) + q.c;
    return ev_clamp8((h + neg) >> q.n);
#endif
}

/* One row through rq2 when ln_negative_tie is false, n ≤ 128 so |d| < 2^15: SMMULR(d·2^16, R) =
 * floor((d·R + 2^15) / 2^16) is u but at the ties of negative d·R. `pos`: every M ≥ 0, the sign of d·M is d's. */
EV_ALWAYS_INLINE void ln_row_rq2(const int8_t *x, int8_t *y, int32_t n, int32_t sum, int32_t r32,
                                 const ev_rq2_t *rq2, int pos) {
    int32_t n16 = n * 65536;
    const int32_t nsum16 = (int32_t)((uint32_t)-sum << 16);
    __asm__("" : "+r"(n16)); /* opaque, or GCC splits d16's MLA into MUL and ADD-with-shift */
    for (int32_t i = 0; i < n; i++, rq2++) {
        const int32_t d16 = x[i] * n16 + nsum16;
        y[i] = ln_rq(2 * ln_smmulr(d16, r32), *rq2, (pos ? d16 : d16 ^ rq2->mult) >> 31);
    }
}

void ev_layernorm(const ev_layernorm_t *p, const int8_t *x, int8_t *y) {
    const int32_t n = p->len, out_zp = p->out_zp;
    const int32_t *mult = p->mult, *shift = p->shift, *beta = p->beta; /* locals: y's stores may alias *p */
    const ev_rq2_t *rq2 = (const ev_rq2_t *)(const void *)p->rq2;
    const int64_t n2 = (int64_t)n * n, eps_q = p->eps_q;
    const int fast = ev_fast_ok_all(mult, shift, n);
    int pos = 1;
    for (int32_t i = 0; rq2 && i < n; i++) pos &= rq2[i].mult >= 0;
    for (int32_t r = 0; r < p->rows; r++, x += n, y += n) {
        int32_t sum, sq;
        ln_sums(x, n, &sum, &sq);
        const int64_t spread = (int64_t)n * sq - (int64_t)sum * sum; /* n²·variance ≥ 0 */
        int64_t var;
        if (n <= 128) { /* spread < 2^28, n² ≤ 2^14: the quotient by parts in 32-bit divisions */
            const uint32_t sp = (uint32_t)spread, d2 = (uint32_t)n2, q = sp / d2;
            var = ((int64_t)q << LN_VAR_BITS) + (((sp - q * d2) << LN_VAR_BITS) + d2 / 2u) / d2 + eps_q;
        } else {
            var = div_round(spread * ((int64_t)1 << LN_VAR_BITS), n2) + eps_q;
        }
        int64_t sigma = var > 0 ? (var <= UINT32_MAX ? isqrt32((uint32_t)var) : isqrt64((uint64_t)var)) : 0;
        if (sigma < 1) sigma = 1;
        const int64_t recip = div_round((int64_t)1 << (LN_VAR_BITS / 2 + LN_OUT_BITS + LN_RECIP_BITS), n * sigma);
        if (recip <= INT32_MAX) {
            /* the usual case (n·σ > 32): |d| ≤ 255·n and R ≤ 2^36/(n·σ) + ½, so u = RDBPOT(d·R, 16), 2^12
             * times the normalised value, is below 2^29 */
            const int32_t r32 = (int32_t)recip;
            if (rq2 && n <= 128 && !ln_negative_tie(n, sum, (uint32_t)r32)) {
                if (pos)
                    ln_row_rq2(x, y, n, sum, r32, rq2, 1); /* ~11 instructions per value */
                else
                    ln_row_rq2(x, y, n, sum, r32, rq2, 0);
            } else if (rq2) {
                for (int32_t i = 0; i < n; i++) {
                    const int32_t d = n * x[i] - sum;
                    y[i] = ln_rq(2 * rdbpot16((int64_t)d * r32), rq2[i], (d ^ rq2[i].mult) >> 31);
                }
            } else {
                /* a 32×32→64 product and the int32 MBQM of ev_common.h (the same bits as ev_mbqm) */
                for (int32_t i = 0; i < n; i++) {
                    const int32_t u = rdbpot16((int64_t)(n * x[i] - sum) * r32);
                    const int32_t q = fast ? ev_mbqm32_fast(u, mult[i], shift[i]) : ev_mbqm(u, mult[i], shift[i]);
                    y[i] = ev_clamp8_sum3(q, beta[i], out_zp);
                }
            }
        } else {
            for (int32_t i = 0; i < n; i++) {
                const int64_t u = ev_rdbpot64((int64_t)(n * x[i] - sum) * recip, LN_RECIP_BITS);
                y[i] = ev_clamp8((int64_t)out_zp + beta[i] + ev_mbqm(u, mult[i], shift[i]));
            }
        }
    }
}
