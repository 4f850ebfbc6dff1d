/* ev_softmax, ev_layernorm ↔ integer_ops.softmax / layernorm (both in-place safe: two passes per row,
 * the second reads x[i] before writing y[i]). */
#include "ev_kernels.h"
#include "ev_common.h"

void ev_softmax(int32_t rows, int32_t len, const uint16_t exp_table[256], const int8_t *x, int8_t *y) {
    for (int32_t r = 0; r < rows; r++, x += len, y += len) {
        int32_t mx = -128;
        for (int32_t i = 0; i < len; i++) mx = x[i] > mx ? x[i] : mx;
        uint32_t total = 0; /* ≤ len·65535: fits for len ≤ 65537 */
        for (int32_t i = 0; i < len; i++) total += exp_table[mx - x[i]];
        for (int32_t i = 0; i < len; i++) {
            /* numpy's integer division by 0 gives 0 (only with an all-zero table) */
            uint32_t q = total ? ((uint32_t)exp_table[mx - x[i]] * 256u + total / 2u) / total : 0u;
            y[i] = ev_clamp8((int64_t)q - 128);
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

#define LN_VAR_BITS 16
#define LN_OUT_BITS 12
#define LN_RECIP_BITS 16

/* RDBPOT(v, 16) when the result fits int32: the low word and the sign are enough for the rounding */
static inline int32_t rdbpot16(int64_t v) {
    return (int32_t)(v >> 16) + (((uint32_t)v & 0xFFFFu) > 0x7FFFu + (uint32_t)(v < 0));
}

void ev_layernorm(const ev_layernorm_t *p, const int8_t *x, int8_t *y) {
    const int32_t n = p->len, out_zp = p->out_zp;
    const int32_t *mult = p->mult, *shift = p->shift, *beta = p->beta; /* locals: y's stores may alias *p */
    const int64_t n2 = (int64_t)n * n, eps_q = p->eps_q;
    const int fast = ev_fast_ok_all(mult, shift, n);
    for (int32_t r = 0; r < p->rows; r++, x += n, y += n) {
        int32_t sum = 0, sq = 0; /* exact in int32 for n < 131 072 */
        for (int32_t i = 0; i < n; i++) {
            sum += x[i];
            sq += x[i] * x[i];
        }
        const int64_t spread = (int64_t)n * sq - (int64_t)sum * sum; /* n²·variance ≥ 0 */
        const int64_t var = div_round(spread * ((int64_t)1 << LN_VAR_BITS), n2) + eps_q;
        int64_t sigma = var > 0 ? isqrt64((uint64_t)var) : 0;
        if (sigma < 1) sigma = 1;
        const int64_t recip = div_round((int64_t)1 << (LN_VAR_BITS / 2 + LN_OUT_BITS + LN_RECIP_BITS), n * sigma);
        if (recip <= INT32_MAX) {
            /* the usual case (n·σ > 32): |d| ≤ 255·n and R ≤ 2^36/(n·σ) + ½, so u = RDBPOT(d·R, 16), 2^12
             * times the normalised value, is below 2^29 — a 32×32→64 product and the int32 MBQM of
             * ev_common.h (the same bits as ev_mbqm) */
            const int32_t r32 = (int32_t)recip;
            for (int32_t i = 0; i < n; i++) {
                const int32_t u = rdbpot16((int64_t)(n * x[i] - sum) * r32);
                const int32_t q = fast ? ev_mbqm32_fast(u, mult[i], shift[i]) : ev_mbqm(u, mult[i], shift[i]);
                y[i] = ev_clamp8_sum3(q, beta[i], out_zp);
            }
        } else {
            for (int32_t i = 0; i < n; i++) {
                const int64_t u = ev_rdbpot64((int64_t)(n * x[i] - sum) * recip, LN_RECIP_BITS);
                y[i] = ev_clamp8((int64_t)out_zp + beta[i] + ev_mbqm(u, mult[i], shift[i]));
            }
        }
    }
}
