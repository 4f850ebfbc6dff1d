/* ev_linear ↔ integer_ops.linear (weight transposed to (n, k)), ev_matmul ↔ integer_ops.matmul. */
#include "ev_kernels.h"
#include "ev_common.h"

void ev_linear(const ev_linear_t *p, const int8_t *x, int8_t *y, int16_t *scratch) {
    /* fields in locals: for the compiler y's int8 stores may alias *p, which would be re-read per output */
    const int32_t rows = p->rows, k = p->k, n = p->n, x_zp = p->x_zp, out_zp = p->out_zp;
    const int8_t *weight = p->weight;
    const int16_t *weight16 = p->weight16;
    const int32_t k16 = EV_WEIGHT16_ROW(k);
    const int32_t *bias = p->bias, *mult = p->mult, *shift = p->shift;
    const int rq = ev_rq_ok_all(mult, shift, n), fast = ev_fast_ok_all(mult, shift, n);
    for (int32_t r = 0; r < rows; r += 4) {
        /* rows r .. r + 3 of x are fully in scratch before any of those rows of y is written: row i of x is
         * read before row i of y is written (the header's aliasing contract; reading ahead is safe) */
        const int32_t np = rows - r < 4 ? rows - r : 4;
        const int8_t *xv[4];
        for (int32_t j = 0; j < 4; j++) xv[j] = x + (int64_t)(r + (j < np ? j : np - 1)) * k;
        ev_pack4(xv, 1, k, x_zp, scratch);
        int8_t *yr = y + (int64_t)r * n;
        if (weight16) { /* two loops: one branch per block, and each keeps its registers */
            /* 2 output columns per pass over the scratch */
            ev_pairs16(weight16, k16, scratch, k, np, rq, fast, bias, mult, shift, out_zp, yr, n, 1, n / 2);
            const int32_t j = n & ~1;
            if (j < n) {
                int32_t acc[4] = {0, 0, 0, 0};
                ev_dot16_1x4(weight16 + (int64_t)j * k16, scratch, k, acc);
                ev_store4(acc, np, rq, fast, bias ? bias[j] : 0, mult[j], shift[j], out_zp, yr + j, n);
            }
        } else {
            for (int32_t j = 0; j < n; j++) {
                int32_t acc[4] = {0, 0, 0, 0};
                ev_dot_1x4(weight + (int64_t)j * k, scratch, k, acc);
                ev_store4(acc, np, rq, fast, bias ? bias[j] : 0, mult[j], shift[j], out_zp, yr + j, n);
            }
        }
    }
}

/* Σ_k (a − z_a)(b − z_b) = Σ_k a·b' − z_a·Σ_k b' with b' = b − z_b from scratch: the inner loop then reads
 * a raw (no per-element zero-point subtraction) and the column sum is paid once per column and batch.
 * Σ a·b' may leave int32 near the K limit, so the correction is done modulo 2^32: the final value fits. */
static inline int32_t mm_acc(int32_t dot, int32_t a_zp, int32_t colsum) {
    return (int32_t)((uint32_t)dot - (uint32_t)a_zp * (uint32_t)colsum);
}

void ev_matmul(const ev_matmul_t *p, const int8_t *a, const int8_t *b, int8_t *y, int16_t *scratch) {
    const int32_t batch = p->batch, m = p->m, k = p->k, n = p->n, a_zp = p->a_zp, b_zp = p->b_zp;
    const int32_t a_stride = p->a_batch_stride, b_stride = p->b_batch_stride;
    const int32_t mult = p->mult, shift = p->shift, out_zp = p->out_zp; /* locals: y may alias *p */
    const int fast = ev_fast_ok(mult, shift), rq = ev_rq_ok(mult, shift);
    const int8_t *b_done = 0;
    for (int32_t bt = 0; bt < batch; bt++) {
        const int8_t *ab = a + (int64_t)bt * a_stride, *bb = b + (int64_t)bt * b_stride;
        int8_t *yb = y + (int64_t)bt * m * n;
        if (bb != b_done) { /* scratch: b − b_zp in blocks of 4 columns (ev_pack4); a broadcast b once */
            for (int32_t j = 0; j < n; j += 4) {
                const int8_t *xv[4];
                for (int32_t t = 0; t < 4; t++) xv[t] = bb + (j + t < n ? j + t : n - 1);
                ev_pack4(xv, n, k, b_zp, scratch + (int64_t)j * k);
            }
            b_done = bb;
        }
        for (int32_t j = 0; j < n; j += 4) {
            const int16_t *s = scratch + (int64_t)j * k;
            const int32_t np = n - j < 4 ? n - j : 4;
            int32_t cs[4] = {0, 0, 0, 0}; /* Σ_k b' of the 4 columns */
            if (a_zp) {
                const int32_t k4 = k & ~3;
                for (int32_t i = 0; i < 4 * k4; i += 16)
                    for (int32_t t = 0; t < 4; t++) cs[t] += s[i + 4 * t] + s[i + 4 * t + 1] + s[i + 4 * t + 2] + s[i + 4 * t + 3];
                for (int32_t i = 4 * k4; i < 4 * k; i += 4)
                    for (int32_t t = 0; t < 4; t++) cs[t] += s[i + t];
            }
            for (int32_t i = 0; i < m; i++) {
                int32_t acc[4] = {0, 0, 0, 0};
                ev_dot_1x4_inl(ab + (int64_t)i * k, s, k, acc);
                if (a_zp) /* cs = 0 otherwise */
                    for (int32_t t = 0; t < 4; t++) acc[t] = mm_acc(acc[t], a_zp, cs[t]);
                ev_store4(acc, np, rq, fast, 0, mult, shift, out_zp, yb + (int64_t)i * n + j, 1);
            }
        }
    }
}
