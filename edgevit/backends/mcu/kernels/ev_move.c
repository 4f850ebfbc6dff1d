/* ev_copy (transpose / slice / split / concat) and ev_gather (np.take along an axis): pure int8 moves. */
#include "ev_kernels.h"
#include "ev_common.h"

/* y[0..n) = x[0..n) (no overlap): newlib-nano's memcpy for runs of 16+ bytes where x and y share their alignment,
 * else unaligned words, 16 bytes a pass (memcpy would move these one byte at a time) */
static void copy_bytes(int8_t *y, const int8_t *x, int32_t n) {
    if (n >= 16 && (((uintptr_t)x ^ (uintptr_t)y) & 3) == 0) {
        memcpy(y, x, (size_t)n);
        return;
    }
    for (; n >= 16; n -= 16, x += 16, y += 16) {
        const uint32_t w0 = ev_ld32(x), w1 = ev_ld32(x + 4), w2 = ev_ld32(x + 8), w3 = ev_ld32(x + 12);
        ev_st32(y, w0);
        ev_st32(y + 4, w1);
        ev_st32(y + 8, w2);
        ev_st32(y + 12, w3);
    }
    for (; n >= 4; n -= 4, x += 4, y += 4) ev_st32(y, ev_ld32(x));
    for (; n > 0; n--) *y++ = *x++;
}

void ev_copy(int32_t rank, const int32_t *shape, const int32_t *in_strides, const int32_t *out_strides,
             const int8_t *x, int8_t *y) {
    /* drop unit axes and merge each axis into the previous one where both layouts continue it (a slice of whole
     * rows, concat's blocks: one long contiguous run instead of many short ones) */
    int32_t r = 0, sh[EV_MAX_RANK], ins[EV_MAX_RANK], outs[EV_MAX_RANK];
    for (int32_t d = 0; d < rank; d++) {
        if (shape[d] <= 0) return;
        if (shape[d] == 1) continue;
        if (r > 0 && ins[r - 1] == shape[d] * in_strides[d] && outs[r - 1] == shape[d] * out_strides[d]) {
            sh[r - 1] *= shape[d];
        } else {
            sh[r] = shape[d];
            r++;
        }
        ins[r - 1] = in_strides[d];
        outs[r - 1] = out_strides[d];
    }
    if (r == 0) {
        y[0] = x[0];
        return;
    }
    const int32_t inner = sh[r - 1], is = ins[r - 1], os = outs[r - 1];
    int32_t idx[EV_MAX_RANK] = {0}, outer = 1, xo = 0, yo = 0;
    for (int32_t d = 0; d < r - 1; d++) outer *= sh[d];
    for (int32_t o = 0; o < outer; o++) {
        if (is == 1 && os == 1) {
            copy_bytes(y + yo, x + xo, inner);
        } else if (os == 1) { /* gathering a transpose's output row: 4 strided reads, then one word store */
            const int8_t *xp = x + xo;
            int8_t *yp = y + yo;
            int32_t i = 0;
            for (; i + 4 <= inner; i += 4, xp += 4 * is) {
                const uint32_t v0 = (uint8_t)xp[0], v1 = (uint8_t)xp[is], v2 = (uint8_t)xp[2 * is];
                ev_st32(yp + i, v0 | v1 << 8 | v2 << 16 | (uint32_t)(uint8_t)xp[3 * is] << 24);
            }
            for (; i < inner; i++, xp += is) yp[i] = *xp;
        } else {
            for (int32_t i = 0; i < inner; i++) y[yo + i * os] = x[xo + i * is];
        }
        for (int32_t d = r - 2; d >= 0; d--) { /* odometer over the outer axes */
            xo += ins[d];
            yo += outs[d];
            if (++idx[d] < sh[d]) break;
            xo -= sh[d] * ins[d];
            yo -= sh[d] * outs[d];
            idx[d] = 0;
        }
    }
}

void ev_gather(int32_t outer, int32_t axis_len, int32_t inner, const int32_t *indices, int32_t n_idx,
               const int8_t *x, int8_t *y) {
    for (int32_t o = 0; o < outer; o++, x += axis_len * inner) {
        for (int32_t t = 0; t < n_idx; t++, y += inner) {
            const int32_t j = indices[t] < 0 ? indices[t] + axis_len : indices[t]; /* np.take wraps negatives */
            copy_bytes(y, x + j * inner, inner);
        }
    }
}
