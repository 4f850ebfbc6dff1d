/* ev_linear ↔ integer_ops.linear (weight transposed to (n, k)), ev_matmul ↔ integer_ops.matmul. */
#include "ev_kernels.h"
#include "ev_common.h"

/* rows r .. r + 3 of the (rows, k) matrix x (the last row repeated in a short block) into s (ev_pack4); the
 * number of real rows */
static inline int32_t pack_rows4(const int8_t *x, int32_t r, int32_t rows, int32_t k, int32_t zp, int16_t *s) {
    const int32_t np = rows - r < 4 ? rows - r : 4;
    const int8_t *xv[4];
    for (int32_t j = 0; j < 4; j++) xv[j] = x + (int64_t)(r + (j < np ? j : np - 1)) * k;
    ev_pack4(xv, 1, k, zp, s);
    return np;
}

void ev_linear(const ev_linear_t *p, const int8_t *x, int8_t *y, int16_t *scratch) {
    /* fields in locals: for the compiler y's int8 stores may alias *p, which would be re-read per output */
    const int32_t rows = p->rows, k = p->k, n = p->n, x_zp = p->x_zp, out_zp = p->out_zp;
    const int8_t *weight = p->weight;
    const int16_t *weight16 = p->weight16;
    const int32_t k16 = EV_WEIGHT16_ROW(k);
    const int32_t *bias = p->bias, *mult = p->mult, *shift = p->shift;
    const int rq = ev_rq_ok_all(mult, shift, n), fast = ev_fast_ok_all(mult, shift, n);
    const int rq2 = ev_rq2_ok_all(mult, shift, n) && ev_rq2_range_ok(bias, n, k, 255 * 128);
    for (int32_t r = 0; r < rows; r += 4) {
        /* rows r .. r + 3 of x are fully in scratch before any of those rows of y is written: row i of x is
         * read before row i of y is written (the header's aliasing contract; reading ahead is safe) */
        const int32_t np = pack_rows4(x, r, rows, k, x_zp, scratch);
        int8_t *yr = y + (int64_t)r * n;
        if (weight16 && rq2) {
            ev_pairs16_rq2(weight16, k16, scratch, np, yr, n, 1, n);
        } else if (weight16) {
            ev_pairs16(weight16, k16, scratch, np, rq, fast, bias, mult, shift, out_zp, yr, n, 1, n);
        } else {
            for (int32_t j = 0; j < n; j++) {
                int32_t acc[4] = {0, 0, 0, 0};
                ev_dot_1x4(weight + (int64_t)j * k, scratch, k, acc);
                ev_store4(acc, np, rq, fast, bias ? bias[j] : 0, mult[j], shift[j], out_zp, yr + j, n);
            }
        }
    }
}

/* Rows i0 .. k − 1 (i0 a multiple of 4) of columns c and c + 1 of b (k × n; a zero column past n) minus zp, times
 * f, as the steps of a pair block from d */
static void mm_pack_cols(const int8_t *b, int32_t n, int32_t k, int32_t c, int32_t i0, int32_t zp, int32_t f,
                         int16_t *d) {
    const int32_t two = c + 1 < n;
    const int8_t *r = b + (int64_t)i0 * n + c;
    int32_t i = i0;
    for (; i + 4 <= k; i += 4, r += 4 * n, d += 8) {
        d[0] = (int16_t)((r[0] - zp) * f); d[1] = (int16_t)((r[2 * n] - zp) * f);
        d[2] = (int16_t)(two ? (r[1] - zp) * f : 0); d[3] = (int16_t)(two ? (r[2 * n + 1] - zp) * f : 0);
        d[4] = (int16_t)((r[n] - zp) * f); d[5] = (int16_t)((r[3 * n] - zp) * f);
        d[6] = (int16_t)(two ? (r[n + 1] - zp) * f : 0); d[7] = (int16_t)(two ? (r[3 * n + 1] - zp) * f : 0);
    }
    for (; i < k; i += 2, r += 2 * n, d += 4) {
        const int more = i + 1 < k;
        d[0] = (int16_t)((r[0] - zp) * f); d[1] = (int16_t)(more ? (r[n] - zp) * f : 0);
        d[2] = (int16_t)(two ? (r[1] - zp) * f : 0); d[3] = (int16_t)(two && more ? (r[n + 1] - zp) * f : 0);
    }
}

/* b (k × n) minus zp, times 2 when dbl, as pair blocks of 2 columns (EV_PAIR16_SIZE(k16) int16 each from d) with
 * bias 0 and q's constants */
static void mm_pack(const int8_t *b, int32_t n, int32_t k, int32_t zp, int32_t dbl, ev_rq2_t q, int16_t *d) {
    const int32_t pb = EV_PAIR16_SIZE(EV_WEIGHT16_ROW(k)), f = 1 + dbl;
    for (int32_t c = 0; c < n; c += 2) {
        int16_t *e = d + (c >> 1) * pb;
        ev_st32(e, 0);
        ev_st32(e + 2, 0);
        for (int32_t t = 0; t < 2; t++) { /* the trailer: (M, c, n) twice */
            int16_t *u = e + pb - 12 + 6 * t;
            ev_st32(u, (uint32_t)q.mult);
            ev_st32(u + 2, (uint32_t)q.c);
            ev_st32(u + 4, (uint32_t)q.n);
        }
    }
    int32_t c = 0;
#if EV_SIMD
    /* 4 columns (2 pairs) × 4 rows: one word per row, transposed with SXTAB16 and halfword packing */
    const int32_t nz = (int32_t)(((uint32_t)(-zp * f) & 0xFFFFu) * 0x10001u), k4 = k & ~3;
    for (; c + 4 <= n; c += 4) {
        int16_t *d0 = d + (c >> 1) * pb + 4, *d1 = d0 + pb;
        const int8_t *r = b + c;
        for (int32_t i = 0; i < k4; i += 4, r += 4 * n, d0 += 8, d1 += 8) {
            const uint32_t u0 = ev_ld32(r), u1 = ev_ld32(r + n), u2 = ev_ld32(r + 2 * n), u3 = ev_ld32(r + 3 * n);
            /* l_i = (columns c, c + 2), h_i = (c + 1, c + 3) of row i, f·(b − zp) */
            uint32_t l0 = (uint32_t)ev_lo_add(u0, nz), l1 = (uint32_t)ev_lo_add(u1, nz);
            uint32_t l2 = (uint32_t)ev_lo_add(u2, nz), l3 = (uint32_t)ev_lo_add(u3, nz);
            uint32_t h0 = (uint32_t)ev_hi_add(u0, nz), h1 = (uint32_t)ev_hi_add(u1, nz);
            uint32_t h2 = (uint32_t)ev_hi_add(u2, nz), h3 = (uint32_t)ev_hi_add(u3, nz);
            if (dbl) {
                l0 = (uint32_t)ev_lo_add(u0, (int32_t)l0); l1 = (uint32_t)ev_lo_add(u1, (int32_t)l1);
                l2 = (uint32_t)ev_lo_add(u2, (int32_t)l2); l3 = (uint32_t)ev_lo_add(u3, (int32_t)l3);
                h0 = (uint32_t)ev_hi_add(u0, (int32_t)h0); h1 = (uint32_t)ev_hi_add(u1, (int32_t)h1);
                h2 = (uint32_t)ev_hi_add(u2, (int32_t)h2); h3 = (uint32_t)ev_hi_add(u3, (int32_t)h3);
            }
            ev_st32(d0, ev_pk_lo(l0, l2));
            ev_st32(d0 + 2, ev_pk_lo(h0, h2));
            ev_st32(d0 + 4, ev_pk_lo(l1, l3));
            ev_st32(d0 + 6, ev_pk_lo(h1, h3));
            ev_st32(d1, ev_pk_hi(l0, l2));
            ev_st32(d1 + 2, ev_pk_hi(h0, h2));
            ev_st32(d1 + 4, ev_pk_hi(l1, l3));
            ev_st32(d1 + 6, ev_pk_hi(h1, h3));
        }
        mm_pack_cols(b, n, k, c, k4, zp, f, d0);
        mm_pack_cols(b, n, k, c + 2, k4, zp, f, d1);
    }
#endif
    for (; c < n; c += 2) mm_pack_cols(b, n, k, c, 0, zp, f, d + (c >> 1) * pb + 4);
}

/* b − b_zp as pair blocks of 2 columns in scratch (packed once per batch; a broadcast b once), then per 4 rows of
 * a their a − a_zp as the quad operand: matmul is then linear's loop, b's columns as output channels. */
void ev_matmul(const ev_matmul_t *p, const int8_t *a, const int8_t *b, int8_t *y, int16_t *scratch) {
    const int32_t batch = p->batch, m = p->m, k = p->k, n = p->n, a_zp = p->a_zp, b_zp = p->b_zp;
    const int32_t a_stride = p->a_batch_stride, b_stride = p->b_batch_stride;
    const int32_t mult = p->mult, shift = p->shift, out_zp = p->out_zp; /* locals: y may alias *p */
    const int fast = ev_fast_ok(mult, shift), rq = ev_rq_ok(mult, shift);
    /* |Σ (a − z_a)(b − z_b)| ≤ 255²·k below 2^29: b doubled for ev_rq2 */
    const int rq2 = ev_rq2_ok(mult, shift) && ev_rq2_range_ok(0, 0, k, 255 * 255);
    const ev_rq2_t q = ev_rq2_make(rq2 ? mult : 0, rq2 ? shift : -1, out_zp);
    const int32_t k16 = EV_WEIGHT16_ROW(k), pb = EV_PAIR16_SIZE(k16);
    int16_t *xs = scratch + (int64_t)((n + 1) >> 1) * pb; /* the quad operand after b's pairs */
    const int8_t *b_done = 0;
    for (int32_t bt = 0; bt < batch; bt++) {
        const int8_t *ab = a + (int64_t)bt * a_stride, *bb = b + (int64_t)bt * b_stride;
        int8_t *yb = y + (int64_t)bt * m * n;
        if (bb != b_done) {
            mm_pack(bb, n, k, b_zp, rq2, q, scratch);
            b_done = bb;
        }
        for (int32_t i = 0; i < m; i += 4) {
            const int32_t np = pack_rows4(ab, i, m, k, a_zp, xs);
            int8_t *yr = yb + (int64_t)i * n;
            if (rq2) {
                ev_pairs16_rq2(scratch, k16, xs, np, yr, n, 1, n);
            } else {
                for (int32_t c = 0; c < n; c += 2) {
                    int32_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    ev_dot_2x4(scratch + (c >> 1) * pb + 4, xs, k16 >> 1, acc);
                    ev_store4(acc, np, rq, fast, 0, mult, shift, out_zp, yr + c, n);
                    if (c + 1 < n) ev_store4(acc + 4, np, rq, fast, 0, mult, shift, out_zp, yr + c + 1, n);
                }
            }
        }
    }
}
