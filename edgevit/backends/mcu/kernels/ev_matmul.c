/* ev_linear ↔ integer_ops.linear (weight transposed to (n, k)), ev_matmul ↔ integer_ops.matmul. */
#include "ev_kernels.h"
#include "ev_common.h"

void ev_linear(const ev_linear_t *p, const int8_t *x, int8_t *y, int16_t *scratch) {
    /* fields in locals: for the compiler y's int8 stores may alias *p, which would be re-read per output */
    const int32_t k = p->k, n = p->n, x_zp = p->x_zp, out_zp = p->out_zp;
    const int8_t *weight = p->weight;
    const int32_t *bias = p->bias, *mult = p->mult, *shift = p->shift;
    const int fast = ev_fast_ok_all(mult, shift, n);
    for (int32_t r = 0; r < p->rows; r++) {
        /* row r of x is fully in scratch before row r of y is written: the header's aliasing contract */
        ev_expand_row(x + (int64_t)r * k, k, x_zp, scratch);
        int8_t *yr = y + (int64_t)r * n;
        int32_t j = 0;
        for (; j + 4 <= n; j += 4) {
            int32_t acc[4] = {0, 0, 0, 0};
            ev_dot_4w(weight + (int64_t)j * k, k, scratch, k, acc);
            for (int32_t t = 0; t < 4; t++)
                yr[j + t] = ev_requant(fast, acc[t], bias ? bias[j + t] : 0, mult[j + t], shift[j + t], out_zp);
        }
        for (; j < n; j++)
            yr[j] = ev_requant(fast, ev_dot_1(weight + (int64_t)j * k, scratch, k), bias ? bias[j] : 0, mult[j],
                               shift[j], out_zp);
    }
}

/* scratch (n, k) = permuted (b − b_zp)ᵀ, so each output column is a contiguous int16 row. */
static void transpose_b(const int8_t *b, int32_t k, int32_t n, int32_t zp, int16_t *s) {
    const int32_t k4 = k & ~3;
    for (int32_t j = 0; j < n; j++, s += k) {
        const int8_t *c = b + j;
        int32_t i = 0;
        for (; i < k4; i += 4) {
            s[i] = (int16_t)(c[i * n] - zp);
            s[i + 1] = (int16_t)(c[(i + 2) * n] - zp);
            s[i + 2] = (int16_t)(c[(i + 1) * n] - zp);
            s[i + 3] = (int16_t)(c[(i + 3) * n] - zp);
        }
        for (; i < k; i++) s[i] = (int16_t)(c[i * n] - zp);
    }
}

/* Σ_k (a − z_a)(b − z_b) = Σ_k a·b' − z_a·Σ_k b' with b' = b − z_b from scratch: the inner loop then reads
 * a raw (no per-element zero-point subtraction) and the column sum is paid once per column and batch.
 * Σ a·b' may leave int32 near the K limit, so the correction is done modulo 2^32: the final value fits. */
static inline int32_t mm_acc(int32_t dot, int32_t a_zp, int32_t colsum) {
    return (int32_t)((uint32_t)dot - (uint32_t)a_zp * (uint32_t)colsum);
}

static inline int32_t row_sum(const int16_t *s, int32_t k) {
    int32_t t = 0;
    for (int32_t i = 0; i < k; i++) t += s[i];
    return t;
}

void ev_matmul(const ev_matmul_t *p, const int8_t *a, const int8_t *b, int8_t *y, int16_t *scratch) {
    const int32_t batch = p->batch, m = p->m, k = p->k, n = p->n, a_zp = p->a_zp, b_zp = p->b_zp;
    const int32_t a_stride = p->a_batch_stride, b_stride = p->b_batch_stride;
    const int32_t mult = p->mult, shift = p->shift, out_zp = p->out_zp; /* locals: y may alias *p */
    const int fast = ev_fast_ok(mult, shift);
    const int8_t *b_done = 0;
    for (int32_t bt = 0; bt < batch; bt++) {
        const int8_t *ab = a + (int64_t)bt * a_stride, *bb = b + (int64_t)bt * b_stride;
        int8_t *yb = y + (int64_t)bt * m * n;
        if (bb != b_done) { /* a broadcast b (stride 0) is transposed once */
            transpose_b(bb, k, n, b_zp, scratch);
            b_done = bb;
        }
        /* 2 columns × 2 rows per dot (column / row tails with the single dot) */
        for (int32_t j = 0; j < n; j += 2) {
            const int16_t *s = scratch + (int64_t)j * k;
            const int pair = j + 1 < n;
            const int32_t cs0 = a_zp ? row_sum(s, k) : 0, cs1 = a_zp && pair ? row_sum(s + k, k) : 0;
            int32_t i = 0;
            for (; pair && i + 2 <= m; i += 2) {
                int32_t acc[4] = {0, 0, 0, 0};
                int8_t *yr = yb + (int64_t)i * n + j;
                ev_dot_2x2(ab + (int64_t)i * k, k, s, k, k, acc);
                yr[0] = ev_requant(fast, mm_acc(acc[0], a_zp, cs0), 0, mult, shift, out_zp);
                yr[1] = ev_requant(fast, mm_acc(acc[1], a_zp, cs1), 0, mult, shift, out_zp);
                yr[n] = ev_requant(fast, mm_acc(acc[2], a_zp, cs0), 0, mult, shift, out_zp);
                yr[n + 1] = ev_requant(fast, mm_acc(acc[3], a_zp, cs1), 0, mult, shift, out_zp);
            }
            for (; i < m; i++) {
                const int8_t *ar = ab + (int64_t)i * k;
                int8_t *yr = yb + (int64_t)i * n + j;
                yr[0] = ev_requant(fast, mm_acc(ev_dot_1(ar, s, k), a_zp, cs0), 0, mult, shift, out_zp);
                if (pair) yr[1] = ev_requant(fast, mm_acc(ev_dot_1(ar, s + k, k), a_zp, cs1), 0, mult, shift, out_zp);
            }
        }
    }
}
