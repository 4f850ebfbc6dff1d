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
                    for (int32_t j = 0; j < 4; j++) { /* a short block repeats its last pixel */
                        const int32_t jj = j < np ? j : np - 1, q = px + jj;
                        xv[j] = cols + jj * k;
                        if (j < np) im2col(p, xg, cg, q / ow, q % ow, cols + j * k);
                    }
                    ev_pack4(xv, 1, k, x_zp, scratch);
                }
                if (weight16) { /* two loops: one branch per block, and each keeps its registers */
                    /* 2 output channels per pass over the scratch */
                    const int32_t o0 = g * og, o = o0 + (og & ~1);
                    ev_pairs16(weight16 + (int64_t)o0 * k16, k16, scratch, k, np, rq, fast, bias ? bias + o0 : 0,
                               mult + o0, shift + o0, out_zp, yb + (int64_t)o0 * ohw + px, 1, ohw, og / 2);
                    if (o < (g + 1) * og) {
                        int32_t acc[4] = {0, 0, 0, 0};
                        ev_dot16_1x4(weight16 + (int64_t)o * k16, scratch, k, acc);
                        ev_store4(acc, np, rq, fast, bias ? bias[o] : 0, mult[o], shift[o], out_zp,
                               yb + (int64_t)o * ohw + px, 1);
                    }
                } else {
                    for (int32_t o = g * og; o < (g + 1) * og; o++) {
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
