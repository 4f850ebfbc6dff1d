/* ev_conv2d ↔ integer_ops.conv2d: NCHW, groups (depthwise fast path), strides, pads, dilations. */
#include "ev_kernels.h"
#include "ev_common.h"

/* [lo, hi) of the taps t < k with 0 ≤ i0 + t·d < size (empty when lo == hi) */
static inline void tap_range(int32_t i0, int32_t k, int32_t d, int32_t size, int32_t *lo, int32_t *hi) {
    int32_t l = i0 < 0 ? (-i0 + d - 1) / d : 0, h = size > i0 ? (size - i0 + d - 1) / d : 0;
    if (h > k) h = k;
    *lo = l < h ? l : h;
    *hi = h;
}

/* int16 index of value i of vector 0 in the quad operand, in ev_pack4's order (vector j at + 2j) */
static inline int32_t quad_pos(int32_t i, int32_t k4) {
    return i < k4 ? 16 * (i >> 2) + 8 * (i & 1) + ((i >> 1) & 1) : 4 * k4 + 8 * ((i - k4) >> 1) + ((i - k4) & 1);
}

/* What im2col needs of a call (locals: the scratch stores may alias *p) */
typedef struct {
    const int32_t *roff;      /* rows3 or kw % 4 == 0: the kernel rows' offsets from the window's first input */
    const int8_t *xb, *xend;  /* the batch's input tensor */
    int32_t h, w, kh, kw, sh, sw, pt, pl, dh, dw, zp, cg, k, rows3;
} im_t;

/* One output pixel's receptive field over cg channels minus x_zp (0 in the padding, as the spec's) as a vector of
 * the quad operand (s: the operand + 2j). rows3 (EV_WEIGHT16 with kw == 3): in its order of kernel rows, where an
 * inside window with dil_w 1 reads each row as one word through the row offsets (its last byte, past the row,
 * must lie before xend); otherwise in ev_pack4's order, by words for an inside window with kw a multiple of 4
 * and dil_w 1, else tap by tap. */
static void im2col(const im_t *c, const int8_t *x, int32_t oy, int32_t ox, int16_t *s) {
    const int32_t h = c->h, w = c->w, kh = c->kh, kw = c->kw, dh = c->dh, dw = c->dw, zp = c->zp, cg = c->cg;
    const int32_t iy0 = oy * c->sh - c->pt, ix0 = ox * c->sw - c->pl, nr = cg * kh, rows3 = c->rows3;
    const int8_t *a = x + iy0 * w + ix0;
    /* rows3: a group of n rows (n = 4 but in the last) has the steps 6g + rr of each row's (v0, v2), then its
     * v1 at half rr & 1 of step 6g + n + rr / 2 */
    int32_t ylo, yhi, xlo, xhi;
#if EV_SIMD
    const int32_t nz = (int32_t)(((uint32_t)-zp & 0xFFFFu) * 0x10001u), *roff = c->roff;
    if (rows3 && dw == 1 && iy0 >= 0 && ix0 >= 0 && iy0 + (kh - 1) * dh < h && ix0 + 2 < w &&
        a + roff[nr - 1] + 3 < c->xend) {
        int32_t r = 0;
        for (; r + 4 <= nr; r += 4, s += 48) { /* (v0, v2) and (v1, v3) of each row's word; v3 is not ours */
            const uint32_t u0 = ev_ld32(a + roff[r]), u1 = ev_ld32(a + roff[r + 1]);
            const uint32_t u2 = ev_ld32(a + roff[r + 2]), u3 = ev_ld32(a + roff[r + 3]);
            ev_st32(s, (uint32_t)ev_lo_add(u0, nz));
            ev_st32(s + 8, (uint32_t)ev_lo_add(u1, nz));
            ev_st32(s + 16, (uint32_t)ev_lo_add(u2, nz));
            ev_st32(s + 24, (uint32_t)ev_lo_add(u3, nz));
            ev_st32(s + 32, ev_pk_lo((uint32_t)ev_hi_add(u0, nz), (uint32_t)ev_hi_add(u1, nz)));
            ev_st32(s + 40, ev_pk_lo((uint32_t)ev_hi_add(u2, nz), (uint32_t)ev_hi_add(u3, nz)));
        }
        const int32_t n = nr - r;
        for (int32_t rr = 0; rr < n; rr++) {
            const uint32_t u = ev_ld32(a + roff[r + rr]);
            ev_st32(s + 8 * rr, (uint32_t)ev_lo_add(u, nz));
            s[8 * (n + (rr >> 1)) + (rr & 1)] = (int16_t)ev_hi_add(u, nz);
        }
        if (n & 1) s[8 * (n + (n >> 1)) + 1] = 0;
        return;
    }
    tap_range(iy0, kh, dh, h, &ylo, &yhi);
    tap_range(ix0, kw, dw, w, &xlo, &xhi);
    /* a border window whose middle column is inside: the same words for its inside rows (their first and last
     * bytes within the input tensor xb .. xend), the outside columns masked to 0 */
    if (rows3 && dw == 1 && xlo <= 1 && xhi > 1 && ylo < yhi && a + roff[ylo] >= c->xb &&
        a + roff[(cg - 1) * kh + yhi - 1] + 3 < c->xend) {
        const uint32_t mask = (xlo == 0 ? 0xFFFFu : 0u) | (xhi > 2 ? 0xFFFF0000u : 0u);
        for (int32_t r = 0, ky = 0; r < nr; s += 48) {
            const int32_t n = nr - r < 4 ? nr - r : 4;
            int16_t *m = s + 8 * n;
            for (int32_t rr = 0; rr < n; rr++, r++) {
                uint32_t lo = 0, hi = 0;
                if (ky >= ylo && ky < yhi) {
                    const uint32_t u = ev_ld32(a + roff[r]);
                    lo = (uint32_t)ev_lo_add(u, nz) & mask;
                    hi = (uint32_t)ev_hi_add(u, nz);
                }
                ev_st32(s + 8 * rr, lo);
                m[8 * (rr >> 1) + (rr & 1)] = (int16_t)hi;
                if (++ky == kh) ky = 0;
            }
            if (n & 1) m[8 * (n >> 1) + 1] = 0;
        }
        return;
    }
    /* ev_pack4's order with kw a multiple of 4: a row's blocks of 4 are words too */
    if (!rows3 && (kw & 3) == 0 && dw == 1 && ylo == 0 && yhi == kh && xlo == 0 && xhi == kw) {
        for (int32_t r = 0; r < nr; r++) {
            for (int32_t b = 0; b < kw; b += 4, s += 16) {
                const uint32_t u = ev_ld32(a + roff[r] + b);
                ev_st32(s, (uint32_t)ev_lo_add(u, nz));
                ev_st32(s + 8, (uint32_t)ev_hi_add(u, nz));
            }
        }
        return;
    }
#else
    tap_range(iy0, kh, dh, h, &ylo, &yhi);
    tap_range(ix0, kw, dw, w, &xlo, &xhi);
#endif
    if (!rows3) {
        const int32_t k = c->k, k4 = k & ~3;
        for (int32_t ci = 0, i = 0; ci < cg; ci++) {
            for (int32_t ky = 0; ky < kh; ky++) {
                const int8_t *row = a + ci * h * w + ky * dh * w;
                for (int32_t kx = 0; kx < kw; kx++, i++) {
                    const int in = ky >= ylo && ky < yhi && kx >= xlo && kx < xhi;
                    s[quad_pos(i, k4)] = (int16_t)(in ? row[kx * dw] - zp : 0);
                }
            }
        }
        if (k & 1) s[quad_pos(k, k4)] = 0; /* the odd tail's pad */
        return;
    }
    /* tap by tap: a column outside the input is read at an inside one (xlo) and masked to 0 */
    const int32_t m0 = xlo == 0 && xhi > 0 ? -1 : 0, m1 = xlo <= 1 && xhi > 1 ? -1 : 0;
    const int32_t m2 = xlo <= 2 && xhi > 2 ? -1 : 0, any = xlo < xhi;
    const int32_t o0 = m0 ? 0 : xlo * dw, o1 = m1 ? dw : xlo * dw, o2 = m2 ? 2 * dw : xlo * dw;
    for (int32_t r = 0, ci = 0, ky = 0; r < nr; s += 48) {
        const int32_t n = nr - r < 4 ? nr - r : 4;
        int16_t *m = s + 8 * n;
        for (int32_t rr = 0; rr < n; rr++, r++) {
            int32_t v0 = 0, v1 = 0, v2 = 0;
            if (any && ky >= ylo && ky < yhi) {
                const int8_t *row = a + ci * h * w + ky * dh * w;
                v0 = (row[o0] - zp) & m0;
                v1 = (row[o1] - zp) & m1;
                v2 = (row[o2] - zp) & m2;
            }
            s[8 * rr] = (int16_t)v0;
            s[8 * rr + 1] = (int16_t)v2;
            m[8 * (rr >> 1) + (rr & 1)] = (int16_t)v1;
            if (++ky == kh) {
                ky = 0;
                ci++;
            }
        }
        if (n & 1) m[8 * (n >> 1) + 1] = 0; /* an odd group's last v1 is paired with 0 */
    }
}

void ev_conv2d(const ev_conv2d_t *p, const int8_t *x, int8_t *y, int16_t *scratch) {
    if (p->group == p->c && p->cout == p->c) {
        ev_conv2d_depthwise(p, x, y, (int8_t *)scratch);
        return;
    }
    const int32_t cg = p->c / p->group, og = p->cout / p->group, k = cg * p->kh * p->kw;
    const int32_t hw = p->h * p->w, ohw = p->oh * p->ow, ow = p->ow, x_zp = p->x_zp, out_zp = p->out_zp;
    const int8_t *weight = p->weight;
    const int16_t *weight16 = p->weight16;
    const int32_t k16 = EV_WEIGHT16_ROW(k);
    const int32_t *bias = p->bias, *mult = p->mult, *shift = p->shift; /* locals: y may alias *p */
    const int rq = ev_rq_ok_all(mult, shift, p->cout), fast = ev_fast_ok_all(mult, shift, p->cout);
    const int rq2 = ev_rq2_ok_all(mult, shift, p->cout) && ev_rq2_range_ok(bias, p->cout, k, 255 * 128);
    /* 1×1, stride 1, no padding: a pixel's receptive field is its channel vector, strided by h·w in x */
    const int pointwise = p->kh == 1 && p->kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_t == 0 &&
                          p->pad_l == 0 && p->oh == p->h && p->ow == p->w;
    int32_t *roff = (int32_t *)(scratch + 4 * k16); /* kernel row offsets after the quad operand */
    im_t c = {roff, x, x, p->h, p->w, p->kh, p->kw, p->stride_h, p->stride_w, p->pad_t, p->pad_l, p->dil_h, p->dil_w,
              x_zp, cg, k, weight16 && p->kw == 3 /* EV_WEIGHT16's order of 3-wide kernels */};
    if (c.rows3 || (c.kw & 3) == 0)
        for (int32_t ci = 0, r = 0; ci < cg; ci++)
            for (int32_t ky = 0; ky < c.kh; ky++) roff[r++] = ci * hw + ky * c.dh * c.w;
    for (int32_t b = 0; b < p->n; b++) {
        const int8_t *xb = x + (int64_t)b * p->c * hw;
        c.xb = xb;
        c.xend = xb + p->c * hw;
        int8_t *yb = y + (int64_t)b * p->cout * ohw;
        /* 4 output pixels (row-major; the last one repeated in a short last block) per pass over the weights */
        for (int32_t px = 0; px < ohw; px += 4) {
            const int32_t np = ohw - px < 4 ? ohw - px : 4;
            for (int32_t g = 0; g < p->group; g++) {
                const int8_t *xg = xb + (int64_t)g * cg * hw, *xv[4];
                if (pointwise) {
                    for (int32_t j = 0; j < 4; j++) xv[j] = xg + px + (j < np ? j : np - 1);
                    ev_pack4(xv, hw, k, x_zp, scratch);
                } else {
                    for (int32_t j = 0, oy = px / ow, ox = px % ow; j < 4; j++) { /* a short block repeats its last */
                        im2col(&c, xg, oy, ox, scratch + 2 * j);
                        if (j + 1 < np && ++ox == ow) {
                            ox = 0;
                            oy++;
                        }
                    }
                }
                const int32_t o0 = g * og;
                const int16_t *wg = weight16 + (int64_t)g * ((og + 1) >> 1) * EV_PAIR16_SIZE(k16);
                int8_t *yg = yb + (int64_t)o0 * ohw + px;
                if (weight16 && rq2) {
                    ev_pairs16_rq2(wg, k16, scratch, np, yg, 1, ohw, og);
                } else if (weight16) {
                    ev_pairs16(wg, k16, scratch, np, rq, fast, bias ? bias + o0 : 0, mult + o0, shift + o0, out_zp,
                               yg, 1, ohw, og);
                } else {
                    for (int32_t o = o0; o < o0 + og; o++) {
                        int32_t acc[4] = {0, 0, 0, 0};
                        ev_dot_1x4(weight + (int64_t)o * k, scratch, k, acc);
                        ev_store4(acc, np, rq, fast, bias ? bias[o] : 0, mult[o], shift[o], out_zp,
                                  yb + (int64_t)o * ohw + px, 1);
                    }
                }
            }
        }
    }
}
