/* ev_conv2d's depthwise path (group == c == cout) ↔ integer_ops.conv2d. */
#include "ev_kernels.h"
#include "ev_common.h"

/* Depthwise (group == c == cout): one kh·kw filter per channel. Each channel is first copied into a padded
 * plane in scratch (EV_DEPTHWISE_SCRATCH_BYTES: every window of the output inside it, the padding as x_zp), so
 * every output pixel — border ones included — is Σ x·w − z·Σw over its full window, without bounds checks.
 * Dense 3×3 with stride_w 1 or 2 (the common case) on the SIMD path: per kernel row one word (a0, a1, a2, a3)
 * unpacked as lo = (a0, a2), hi = (a1, a3); with W = (t0, t2) and V = (t1, 0):
 *   out(ox)     = lo·W + hi·V            (SMLAD, SMLAD)
 *   out(ox + 1) = hi·W + lo·swap(V)      (SMLAD, SMLADX; stride 1: the same word)
 * and bias − z·Σw starts the sum when sum + bias cannot saturate (checked per channel). */
static inline int32_t dw_plane_w(const ev_conv2d_t *p) { /* the padded plane's row length (EV_DEPTHWISE_SCRATCH_BYTES) */
    return ((p->ow - 1) * p->stride_w + (p->kw - 1) * p->dil_w + 1 + 1 + 3) & ~3;
}

/* the channel's input rows into the plane (whose padding was filled with x_zp once per call) */
static void dw_plane(const ev_conv2d_t *p, const int8_t *xc, int8_t *d, int32_t ph, int32_t pw) {
    const int32_t h = p->h, w = p->w, pt = p->pad_t, pl = p->pad_l;
    /* input columns [c0, c1) land at plane columns [c0 + pl, c1 + pl), input rows [r0, r1) at plane rows + pt */
    const int32_t c0 = pl < 0 ? -pl : 0, c1 = pw - pl < w ? pw - pl : w, r0 = pt < 0 ? -pt : 0;
    const int32_t r1 = ph - pt < h ? ph - pt : h, n = c1 - c0;
    if (n <= 0) return;
    for (int32_t iy = r0; iy < r1; iy++) {
        const int8_t *s = xc + iy * w + c0;
        int8_t *t = d + (iy + pt) * pw + c0 + pl;
        int32_t i = 0;
        for (; i + 4 <= n; i += 4) ev_st32(t + i, ev_ld32(s + i));
        for (; i < n; i++) t[i] = s[i];
    }
}

void ev_conv2d_depthwise(const ev_conv2d_t *p, const int8_t *x, int8_t *y, int8_t *plane) {
    const int32_t h = p->h, w = p->w, kh = p->kh, kw = p->kw, dh = p->dil_h, dw = p->dil_w, zp = p->x_zp;
    const int32_t sh = p->stride_h, sw = p->stride_w, oh = p->oh, ow = p->ow, kk = kh * kw, out_zp = p->out_zp;
    const int32_t pw = dw_plane_w(p), ph = (oh - 1) * sh + (kh - 1) * dh + 1;
    const int dense3x3 = kh == 3 && kw == 3 && dh == 1 && dw == 1 && (sw == 1 || sw == 2);
    if (oh <= 0 || ow <= 0) return;
    memset(plane, zp, (size_t)(ph * pw)); /* the padding; dw_plane overwrites the input's part per channel */
    for (int32_t b = 0; b < p->n; b++) {
        for (int32_t ch = 0; ch < p->c; ch++) {
            const int8_t *xc = x + ((int64_t)b * p->c + ch) * h * w, *wc = p->weight + ch * kk;
            int8_t *yc = y + ((int64_t)b * p->c + ch) * oh * ow;
            int32_t wsum = 0, wabs = 0;
            for (int32_t i = 0; i < kk; i++) {
                wsum += wc[i];
                wabs += wc[i] < 0 ? -wc[i] : wc[i];
            }
            /* locals: for the compiler y's stores may alias the weights and *p */
            const int32_t zsum = zp * wsum, bias = p->bias ? p->bias[ch] : 0; /* |z·Σw| ≤ 128·127·kh·kw */
            const int32_t mult = p->mult[ch], shift = p->shift[ch];
            const int fast = ev_fast_ok(mult, shift), rq = ev_rq_ok(mult, shift);
            /* |Σ (x − z)·w| ≤ 255·Σ|w|: bias + that fits int32, so the sum may start at bias − z·Σw (mod 2^32) */
            const int64_t bound = (int64_t)255 * wabs;
            const int nosat = (int64_t)bias + bound <= INT32_MAX && (int64_t)bias - bound >= INT32_MIN;
            const ev_rq_t q = ev_rq_make(rq ? mult : 0, rq ? shift : -2, out_zp);
            const int32_t init = (int32_t)((uint32_t)bias - (uint32_t)zsum);
            dw_plane(p, xc, plane, ph, pw);
#if EV_SIMD
            if (dense3x3 && rq && nosat) {
                /* (t0, t2) and (t1, 0) of each kernel row as int16 pairs */
                const int32_t w0 = (int32_t)(((uint32_t)wc[0] & 0xFFFFu) | ((uint32_t)wc[2] << 16));
                const int32_t v0 = (int32_t)((uint32_t)wc[1] & 0xFFFFu);
                const int32_t w1 = (int32_t)(((uint32_t)wc[3] & 0xFFFFu) | ((uint32_t)wc[5] << 16));
                const int32_t v1 = (int32_t)((uint32_t)wc[4] & 0xFFFFu);
                const int32_t w2 = (int32_t)(((uint32_t)wc[6] & 0xFFFFu) | ((uint32_t)wc[8] << 16));
                const int32_t v2 = (int32_t)((uint32_t)wc[7] & 0xFFFFu);
                for (int32_t oy = 0; oy < oh; oy++) {
                    const int8_t *r = plane + oy * sh * pw;
                    int8_t *yr = yc + oy * ow;
                    int32_t ox = 0;
                    if (sw == 1) {
                        /* 4 outputs: words at r (a0..a3 → outputs 0, 1) and r + 2 (a2..a5 → outputs 2, 3) */
                        for (; ox + 4 <= ow; ox += 4, r += 4) {
                            int32_t a0 = init, a1 = init, a2 = init, a3 = init;
#define EV_DW_ROW(o, wk, vk)                                                                                    \
    do {                                                                                                        \
        const uint32_t u = ev_ld32(r + (o)), t = ev_ld32(r + (o) + 2);                                          \
        const int32_t ul = ev_lo(u), uh = ev_hi(u), tl = ev_lo(t), th = ev_hi(t);                               \
        a0 = __smlad(ul, wk, a0); a0 = __smlad(uh, vk, a0);                                                     \
        a1 = __smlad(uh, wk, a1); a1 = __smladx(ul, vk, a1);                                                    \
        a2 = __smlad(tl, wk, a2); a2 = __smlad(th, vk, a2);                                                     \
        a3 = __smlad(th, wk, a3); a3 = __smladx(tl, vk, a3);                                                    \
    } while (0)
                            EV_DW_ROW(0, w0, v0);
                            EV_DW_ROW(pw, w1, v1);
                            EV_DW_ROW(2 * pw, w2, v2);
#undef EV_DW_ROW
                            yr[ox] = ev_rq(a0, q);
                            yr[ox + 1] = ev_rq(a1, q);
                            yr[ox + 2] = ev_rq(a2, q);
                            yr[ox + 3] = ev_rq(a3, q);
                        }
                        for (; ox + 2 <= ow; ox += 2, r += 2) {
                            int32_t a0 = init, a1 = init;
                            uint32_t u = ev_ld32(r);
                            int32_t lo = ev_lo(u), hi = ev_hi(u);
                            a0 = __smlad(lo, w0, a0); a0 = __smlad(hi, v0, a0);
                            a1 = __smlad(hi, w0, a1); a1 = __smladx(lo, v0, a1);
                            u = ev_ld32(r + pw); lo = ev_lo(u); hi = ev_hi(u);
                            a0 = __smlad(lo, w1, a0); a0 = __smlad(hi, v1, a0);
                            a1 = __smlad(hi, w1, a1); a1 = __smladx(lo, v1, a1);
                            u = ev_ld32(r + 2 * pw); lo = ev_lo(u); hi = ev_hi(u);
                            a0 = __smlad(lo, w2, a0); a0 = __smlad(hi, v2, a0);
                            a1 = __smlad(hi, w2, a1); a1 = __smladx(lo, v2, a1);
                            yr[ox] = ev_rq(a0, q);
                            yr[ox + 1] = ev_rq(a1, q);
                        }
                    } else {
                        for (; ox + 2 <= ow; ox += 2, r += 4) {
                            int32_t a0 = init, a1 = init;
                            uint32_t u = ev_ld32(r), t = ev_ld32(r + 2);
                            a0 = __smlad(ev_lo(u), w0, a0); a0 = __smlad(ev_hi(u), v0, a0);
                            a1 = __smlad(ev_lo(t), w0, a1); a1 = __smlad(ev_hi(t), v0, a1);
                            u = ev_ld32(r + pw); t = ev_ld32(r + pw + 2);
                            a0 = __smlad(ev_lo(u), w1, a0); a0 = __smlad(ev_hi(u), v1, a0);
                            a1 = __smlad(ev_lo(t), w1, a1); a1 = __smlad(ev_hi(t), v1, a1);
                            u = ev_ld32(r + 2 * pw); t = ev_ld32(r + 2 * pw + 2);
                            a0 = __smlad(ev_lo(u), w2, a0); a0 = __smlad(ev_hi(u), v2, a0);
                            a1 = __smlad(ev_lo(t), w2, a1); a1 = __smlad(ev_hi(t), v2, a1);
                            yr[ox] = ev_rq(a0, q);
                            yr[ox + 1] = ev_rq(a1, q);
                        }
                    }
                    if (ox < ow) { /* odd last output: one word per row (its 4th byte is in the plane, weight 0) */
                        int32_t a0 = init;
                        uint32_t u = ev_ld32(r);
                        a0 = __smlad(ev_lo(u), w0, a0); a0 = __smlad(ev_hi(u), v0, a0);
                        u = ev_ld32(r + pw);
                        a0 = __smlad(ev_lo(u), w1, a0); a0 = __smlad(ev_hi(u), v1, a0);
                        u = ev_ld32(r + 2 * pw);
                        a0 = __smlad(ev_lo(u), w2, a0); a0 = __smlad(ev_hi(u), v2, a0);
                        yr[ox] = ev_rq(a0, q);
                    }
                }
                continue;
            }
#endif
            int32_t t[9] = {0};
            if (dense3x3)
                for (int32_t i = 0; i < 9; i++) t[i] = wc[i];
            for (int32_t oy = 0; oy < oh; oy++) {
                int8_t *yr = yc + oy * ow;
                for (int32_t ox = 0; ox < ow; ox++) {
                    const int8_t *r0 = plane + oy * sh * pw + ox * sw;
                    int32_t acc = 0; /* Σ x·w; Σ (x − z)·w = acc − z·Σw fits int32 (the quantizer's guarantee) */
                    if (dense3x3) {
                        const int8_t *r1 = r0 + pw, *r2 = r1 + pw;
                        acc = r0[0] * t[0] + r0[1] * t[1] + r0[2] * t[2] + r1[0] * t[3] + r1[1] * t[4] + r1[2] * t[5] +
                              r2[0] * t[6] + r2[1] * t[7] + r2[2] * t[8];
                    } else {
                        const int8_t *wr = wc;
                        for (int32_t ky = 0; ky < kh; ky++, r0 += dh * pw, wr += kw)
                            for (int32_t kx = 0; kx < kw; kx++) acc += r0[kx * dw] * wr[kx];
                    }
                    yr[ox] = rq && nosat ? ev_rq((int32_t)((uint32_t)acc + (uint32_t)init), q)
                                         : ev_requant(fast, acc - zsum, bias, mult, shift, out_zp);
                }
            }
        }
    }
}
