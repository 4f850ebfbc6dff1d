/* ev_avgpool, ev_maxpool, ev_reduce_mean ↔ integer_ops.avgpool / maxpool / reduce_mean (NCHW). */
#include "ev_kernels.h"
#include "ev_common.h"

/* [lo, hi) of the kernel taps t with 0 ≤ i0 + t < size (unit dilation) */
static inline void tap_range(int32_t i0, int32_t k, int32_t size, int32_t *lo, int32_t *hi) {
    *lo = i0 < 0 ? -i0 : 0;
    *hi = size - i0 < k ? size - i0 : k;
}

void ev_avgpool(const ev_pool_t *p, const int8_t *x, int8_t *y) {
    const int32_t h = p->h, w = p->w, x_zp = p->x_zp, mult = p->mult, shift = p->shift, out_zp = p->out_zp;
    const int fast = ev_fast_ok(mult, shift);
    for (int32_t pl = 0; pl < p->n * p->c; pl++, x += h * w) {
        for (int32_t oy = 0; oy < p->oh; oy++) {
            const int32_t iy0 = oy * p->stride_h - p->pad_t;
            int32_t ylo, yhi;
            tap_range(iy0, p->kh, h, &ylo, &yhi);
            for (int32_t ox = 0; ox < p->ow; ox++, y++) {
                const int32_t ix0 = ox * p->stride_w - p->pad_l;
                int32_t xlo, xhi, s = 0, cnt;
                tap_range(ix0, p->kw, w, &xlo, &xhi);
                for (int32_t ky = ylo; ky < yhi; ky++) {
                    const int8_t *row = x + (iy0 + ky) * w + ix0;
                    for (int32_t kx = xlo; kx < xhi; kx++) s += row[kx];
                }
                /* padding is x_zp, i.e. contributes 0 to Σ (x − x_zp) */
                cnt = (yhi > ylo && xhi > xlo) ? (yhi - ylo) * (xhi - xlo) : 0;
                *y = ev_requant(fast, s, -cnt * x_zp, mult, shift, out_zp);
            }
        }
    }
}

void ev_maxpool(const ev_pool_t *p, const int8_t *x, int8_t *y) {
    const int32_t h = p->h, w = p->w;
    const int32_t dh = p->dil_h > 0 ? p->dil_h : 1, dw = p->dil_w > 0 ? p->dil_w : 1;
    for (int32_t pl = 0; pl < p->n * p->c; pl++, x += h * w) {
        for (int32_t oy = 0; oy < p->oh; oy++) {
            const int32_t iy0 = oy * p->stride_h - p->pad_t;
            for (int32_t ox = 0; ox < p->ow; ox++) {
                const int32_t ix0 = ox * p->stride_w - p->pad_l;
                int32_t mx = -128; /* the padding value, and the int8 minimum */
                for (int32_t ky = 0, iy = iy0; ky < p->kh; ky++, iy += dh) {
                    if (iy < 0 || iy >= h) continue;
                    const int8_t *row = x + iy * w;
                    for (int32_t kx = 0, ix = ix0; kx < p->kw; kx++, ix += dw)
                        if (ix >= 0 && ix < w && row[ix] > mx) mx = row[ix];
                }
                *y++ = (int8_t)mx;
            }
        }
    }
}

void ev_reduce_mean(const ev_reduce_mean_t *p, const int8_t *x, int8_t *y) {
    const int32_t R = p->reduce, I = p->inner, x_zp = p->x_zp, mult = p->mult, shift = p->shift, out_zp = p->out_zp;
    const int fast = ev_fast_ok(mult, shift);
    for (int32_t o = 0; o < p->outer; o++, x += R * I) {
        for (int32_t i = 0; i < I; i++) {
            int32_t s = 0;
            for (int32_t r = 0; r < R; r++) s += x[r * I + i];
            *y++ = ev_requant(fast, s, -R * x_zp, mult, shift, out_zp);
        }
    }
}
