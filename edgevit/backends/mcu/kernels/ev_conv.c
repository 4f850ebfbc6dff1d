/* ev_conv2d ↔ integer_ops.conv2d: NCHW, groups (depthwise fast path), strides, pads, dilations. */
#include "ev_kernels.h"
#include "ev_common.h"

static inline int8_t conv_out(int32_t acc, const ev_conv2d_t *p, int32_t o) {
    return ev_requant_sum(acc, p->bias ? p->bias[o] : 0, p->mult[o], p->shift[o], p->out_zp);
}

/* One output pixel's receptive field over cg channels, x − x_zp (padding → 0), permuted for ev_dot. */
static void im2col(const ev_conv2d_t *p, const int8_t *x, int32_t cg, int32_t oy, int32_t ox, int16_t *s) {
    const int32_t h = p->h, w = p->w, kh = p->kh, kw = p->kw, dh = p->dil_h, dw = p->dil_w, zp = p->x_zp;
    const int32_t iy0 = oy * p->stride_h - p->pad_t, ix0 = ox * p->stride_w - p->pad_l;
    const int inside_x = ix0 >= 0 && ix0 + (kw - 1) * dw < w;
    int16_t *d = s;
    for (int32_t ci = 0; ci < cg; ci++, x += h * w) {
        for (int32_t ky = 0, iy = iy0; ky < kh; ky++, iy += dh) {
            if (iy < 0 || iy >= h) {
                for (int32_t kx = 0; kx < kw; kx++) *d++ = 0;
                continue;
            }
            const int8_t *row = x + iy * w;
            if (inside_x) {
                if (dw == 1) {
                    for (int32_t kx = 0; kx < kw; kx++) *d++ = (int16_t)(row[ix0 + kx] - zp);
                } else {
                    for (int32_t kx = 0, ix = ix0; kx < kw; kx++, ix += dw) *d++ = (int16_t)(row[ix] - zp);
                }
            } else {
                for (int32_t kx = 0, ix = ix0; kx < kw; kx++, ix += dw)
                    *d++ = (int16_t)(ix >= 0 && ix < w ? row[ix] - zp : 0);
            }
        }
    }
    ev_permute4(s, cg * kh * kw);
}

/* group == c == cout: one kh·kw filter per channel, too short for SIMD to pay off. Interior pixels use
 * Σ(x − z)·w = Σ x·w − z·Σ w (no bounds checks); border pixels sum the valid taps only. */
static void conv_depthwise(const ev_conv2d_t *p, const int8_t *x, int8_t *y) {
    const int32_t h = p->h, w = p->w, kh = p->kh, kw = p->kw, dh = p->dil_h, dw = p->dil_w, zp = p->x_zp;
    const int32_t sh = p->stride_h, sw = p->stride_w, oh = p->oh, ow = p->ow, kk = kh * kw;
    for (int32_t b = 0; b < p->n; b++) {
        for (int32_t ch = 0; ch < p->c; ch++) {
            const int8_t *xc = x + ((int64_t)b * p->c + ch) * h * w, *wc = p->weight + ch * kk;
            int8_t *yc = y + ((int64_t)b * p->c + ch) * oh * ow;
            int32_t wsum = 0;
            for (int32_t i = 0; i < kk; i++) wsum += wc[i];
            const int32_t zsum = zp * wsum, bias = p->bias ? p->bias[ch] : 0; /* |z·Σw| ≤ 128·127·kh·kw */
            const int32_t mult = p->mult[ch], shift = p->shift[ch], out_zp = p->out_zp;
            const int dense3x3 = kh == 3 && kw == 3 && dh == 1 && dw == 1;
            int32_t t[9] = {0}; /* 3×3 taps held in registers: the y stores may alias the weights for the compiler */
            if (dense3x3)
                for (int32_t i = 0; i < 9; i++) t[i] = wc[i];
            for (int32_t oy = 0; oy < oh; oy++) {
                const int32_t iy0 = oy * sh - p->pad_t;
                const int inside_y = iy0 >= 0 && iy0 + (kh - 1) * dh < h;
                for (int32_t ox = 0; ox < ow; ox++) {
                    const int32_t ix0 = ox * sw - p->pad_l;
                    int32_t acc; /* Σ (x − z)·w, fits int32 (the quantizer's guarantee) */
                    if (inside_y && ix0 >= 0 && ix0 + (kw - 1) * dw < w) {
                        const int8_t *xr = xc + iy0 * w + ix0, *wr = wc;
                        int32_t s = 0;
                        if (dense3x3) { /* the common case */
                            const int8_t *r1 = xr + w, *r2 = r1 + w;
                            s = xr[0] * t[0] + xr[1] * t[1] + xr[2] * t[2] + r1[0] * t[3] + r1[1] * t[4] +
                                r1[2] * t[5] + r2[0] * t[6] + r2[1] * t[7] + r2[2] * t[8];
                        } else {
                            for (int32_t ky = 0; ky < kh; ky++, xr += dh * w, wr += kw)
                                for (int32_t kx = 0; kx < kw; kx++) s += xr[kx * dw] * wr[kx];
                        }
                        acc = s - zsum;
                    } else {
                        int32_t s = 0;
                        for (int32_t ky = 0, iy = iy0; ky < kh; ky++, iy += dh) {
                            if (iy < 0 || iy >= h) continue;
                            for (int32_t kx = 0, ix = ix0; kx < kw; kx++, ix += dw)
                                if (ix >= 0 && ix < w) s += (xc[iy * w + ix] - zp) * wc[ky * kw + kx];
                        }
                        acc = s;
                    }
                    yc[oy * ow + ox] = ev_requant_sum(acc, bias, mult, shift, out_zp);
                }
            }
        }
    }
}

void ev_conv2d(const ev_conv2d_t *p, const int8_t *x, int8_t *y, int16_t *scratch) {
    if (p->group == p->c && p->cout == p->c) {
        conv_depthwise(p, x, y);
        return;
    }
    const int32_t cg = p->c / p->group, og = p->cout / p->group, k = cg * p->kh * p->kw;
    const int32_t hw = p->h * p->w, ohw = p->oh * p->ow;
    for (int32_t b = 0; b < p->n; b++) {
        const int8_t *xb = x + (int64_t)b * p->c * hw;
        int8_t *yb = y + (int64_t)b * p->cout * ohw;
        for (int32_t oy = 0; oy < p->oh; oy++) {
            for (int32_t ox = 0; ox < p->ow; ox++) {
                int8_t *yp = yb + oy * p->ow + ox;
                for (int32_t g = 0; g < p->group; g++) {
                    im2col(p, xb + g * cg * hw, cg, oy, ox, scratch);
                    int32_t o = g * og;
                    const int32_t end = o + og;
                    /* 4 output channels per pass share the scratch loads */
                    for (; o + 4 <= end; o += 4) {
                        int32_t acc[4] = {0, 0, 0, 0};
                        ev_dot_4w(p->weight + (int64_t)o * k, k, scratch, k, acc);
                        for (int32_t j = 0; j < 4; j++) yp[(o + j) * ohw] = conv_out(acc[j], p, o + j);
                    }
                    for (; o < end; o++)
                        yp[o * ohw] = conv_out(ev_dot_1(p->weight + (int64_t)o * k, scratch, k), p, o);
                }
            }
        }
    }
}
