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

/* One output pixel's receptive field over cg channels, raw int8 in natural order with the padding as x_zp (so
 * x − x_zp is 0 there, as the spec's padding). */
static void im2col(const ev_conv2d_t *p, const int8_t *x, int32_t cg, int32_t oy, int32_t ox, int8_t *d) {
    const int32_t h = p->h, w = p->w, kh = p->kh, kw = p->kw, dh = p->dil_h, dw = p->dil_w;
    const int8_t zp = (int8_t)p->x_zp;
    const int32_t iy0 = oy * p->stride_h - p->pad_t, ix0 = ox * p->stride_w - p->pad_l;
    int32_t ylo, yhi, xlo, xhi;
    tap_range(iy0, kh, dh, h, &ylo, &yhi);
    tap_range(ix0, kw, dw, w, &xlo, &xhi);
    for (int32_t ci = 0; ci < cg; ci++, x += h * w) {
        for (int32_t ky = 0; ky < kh; ky++) {
            if (ky < ylo || ky >= yhi) {
                for (int32_t kx = 0; kx < kw; kx++) *d++ = zp;
                continue;
            }
            const int8_t *row = x + (iy0 + ky * dh) * w + ix0;
            int32_t kx = 0;
            for (; kx < xlo; kx++) *d++ = zp;
            if (dw == 1)
                for (; kx < xhi; kx++) *d++ = row[kx];
            else
                for (; kx < xhi; kx++) *d++ = row[kx * dw];
            for (; kx < kw; kx++) *d++ = zp;
        }
    }
}

/* Σ (x − z)·w over the taps of one output pixel that fall inside the image (padding contributes 0) */
static inline int32_t dw_border(const ev_conv2d_t *p, const int8_t *xc, const int8_t *wc, int32_t iy0, int32_t ix0) {
    int32_t ylo, yhi, xlo, xhi, acc = 0;
    tap_range(iy0, p->kh, p->dil_h, p->h, &ylo, &yhi);
    tap_range(ix0, p->kw, p->dil_w, p->w, &xlo, &xhi);
    for (int32_t ky = ylo; ky < yhi; ky++) {
        const int8_t *row = xc + (iy0 + ky * p->dil_h) * p->w + ix0, *wr = wc + ky * p->kw;
        for (int32_t kx = xlo; kx < xhi; kx++) acc += (row[kx * p->dil_w] - p->x_zp) * wr[kx];
    }
    return acc;
}

/* group == c == cout: one kh·kw filter per channel, too short for SIMD to pay off. Pixels whose window is
 * inside the image (a rectangle of them, found once) use Σ(x − z)·w = Σ x·w − z·Σ w without bounds checks,
 * 3×3 unrolled; the border pixels sum their valid taps only. */
static void conv_depthwise(const ev_conv2d_t *p, const int8_t *x, int8_t *y) {
    const int32_t h = p->h, w = p->w, kh = p->kh, kw = p->kw, dh = p->dil_h, dw = p->dil_w, zp = p->x_zp;
    const int32_t sh = p->stride_h, sw = p->stride_w, oh = p->oh, ow = p->ow, kk = kh * kw, out_zp = p->out_zp;
    const int dense3x3 = kh == 3 && kw == 3 && dh == 1 && dw == 1;
    int32_t oy0 = 0, oy1 = 0, ox0 = 0, ox1 = 0; /* interior outputs [oy0, oy1) × [ox0, ox1), contiguous */
    for (int32_t o = 0; o < oh; o++) {
        const int32_t i0 = o * sh - p->pad_t;
        if (i0 >= 0 && i0 + (kh - 1) * dh < h) {
            if (oy1 == oy0) oy0 = o;
            oy1 = o + 1;
        }
    }
    for (int32_t o = 0; o < ow; o++) {
        const int32_t i0 = o * sw - p->pad_l;
        if (i0 >= 0 && i0 + (kw - 1) * dw < w) {
            if (ox1 == ox0) ox0 = o;
            ox1 = o + 1;
        }
    }
    for (int32_t b = 0; b < p->n; b++) {
        for (int32_t ch = 0; ch < p->c; ch++) {
            const int8_t *xc = x + ((int64_t)b * p->c + ch) * h * w, *wc = p->weight + ch * kk;
            int8_t *yc = y + ((int64_t)b * p->c + ch) * oh * ow;
            int32_t wsum = 0;
            for (int32_t i = 0; i < kk; i++) wsum += wc[i];
            /* locals: for the compiler y's stores may alias the weights and *p */
            const int32_t zsum = zp * wsum, bias = p->bias ? p->bias[ch] : 0; /* |z·Σw| ≤ 128·127·kh·kw */
            const int32_t mult = p->mult[ch], shift = p->shift[ch];
            const int fast = ev_fast_ok(mult, shift), rq = ev_rq_ok(mult, shift);
            const ev_rq_t q = ev_rq_make(rq ? mult : 0, rq ? shift : -2, out_zp);
            int32_t t[9] = {0};
            if (dense3x3)
                for (int32_t i = 0; i < 9; i++) t[i] = wc[i];
            for (int32_t oy = 0; oy < oh; oy++) {
                const int32_t iy0 = oy * sh - p->pad_t;
                const int row_inside = oy >= oy0 && oy < oy1;
                const int32_t a = row_inside ? ox0 : ow, e = row_inside ? ox1 : ow; /* fast columns [a, e) */
                int8_t *yr = yc + oy * ow;
                /* acc: Σ (x − z)·w, fits int32 (the quantizer's guarantee) */
                for (int32_t ox = 0; ox < a; ox++)
                    yr[ox] = ev_requant(fast, dw_border(p, xc, wc, iy0, ox * sw - p->pad_l), bias, mult, shift, out_zp);
                for (int32_t ox = a; ox < e; ox++) {
                    const int8_t *r0 = xc + iy0 * w + ox * sw - p->pad_l;
                    int32_t acc = 0;
                    if (dense3x3) {
                        const int8_t *r1 = r0 + w, *r2 = r1 + w;
                        acc = r0[0] * t[0] + r0[1] * t[1] + r0[2] * t[2] + r1[0] * t[3] + r1[1] * t[4] + r1[2] * t[5] +
                              r2[0] * t[6] + r2[1] * t[7] + r2[2] * t[8];
                    } else {
                        const int8_t *wr = wc;
                        for (int32_t ky = 0; ky < kh; ky++, r0 += dh * w, wr += kw)
                            for (int32_t kx = 0; kx < kw; kx++) acc += r0[kx * dw] * wr[kx];
                    }
                    yr[ox] = rq ? ev_rq(ev_sat_add(acc - zsum, bias), q) : ev_requant(fast, acc - zsum, bias, mult, shift, out_zp);
                }
                for (int32_t ox = e; ox < ow; ox++)
                    yr[ox] = ev_requant(fast, dw_border(p, xc, wc, iy0, ox * sw - p->pad_l), bias, mult, shift, out_zp);
            }
        }
    }
}

/* the 4 outputs of one channel for 4 pixels / rows / columns (`np` of them real, np ≥ 1), at y + j·ys */
static inline void store4(const int32_t acc[4], int32_t np, int rq, int fast, int32_t bias, int32_t mult, int32_t shift,
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

void ev_conv2d(const ev_conv2d_t *p, const int8_t *x, int8_t *y, int16_t *scratch) {
    if (p->group == p->c && p->cout == p->c) {
        conv_depthwise(p, x, y);
        return;
    }
    const int32_t cg = p->c / p->group, og = p->cout / p->group, k = cg * p->kh * p->kw;
    const int32_t hw = p->h * p->w, ohw = p->oh * p->ow, ow = p->ow, x_zp = p->x_zp, out_zp = p->out_zp;
    const int8_t *weight = p->weight;
    const int32_t *bias = p->bias, *mult = p->mult, *shift = p->shift; /* locals: y may alias *p */
    const int rq = ev_rq_ok_all(mult, shift, p->cout), fast = ev_fast_ok_all(mult, shift, p->cout);
    /* 1×1, stride 1, no padding: a pixel's receptive field is its channel vector, strided by h·w in x */
    const int pointwise = p->kh == 1 && p->kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_t == 0 &&
                          p->pad_l == 0 && p->oh == p->h && p->ow == p->w;
    int8_t *cols = (int8_t *)(scratch + 4 * k); /* the 4 receptive fields before packing (not pointwise) */
    for (int32_t b = 0; b < p->n; b++) {
        const int8_t *xb = x + (int64_t)b * p->c * hw;
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
                    for (int32_t j = 0; j < 4; j++) {
                        const int32_t q = px + (j < np ? j : np - 1);
                        xv[j] = cols + j * k;
                        if (j < np) im2col(p, xg, cg, q / ow, q % ow, cols + j * k);
                        else xv[j] = xv[j - 1];
                    }
                    ev_pack4(xv, 1, k, x_zp, scratch);
                }
                for (int32_t o = g * og; o < (g + 1) * og; o++) {
                    int32_t acc[4] = {0, 0, 0, 0};
                    ev_dot_1x4(weight + (int64_t)o * k, scratch, k, acc);
                    store4(acc, np, rq, fast, bias ? bias[o] : 0, mult[o], shift[o], out_zp, yb + (int64_t)o * ohw + px,
                           1);
                }
            }
        }
    }
}
