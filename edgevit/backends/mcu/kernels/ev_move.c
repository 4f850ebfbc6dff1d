/* ev_copy (transpose / slice / split / concat) and ev_gather (np.take along an axis): pure int8 moves. */
#include <string.h>
#include "ev_kernels.h"

void ev_copy(int32_t rank, const int32_t *shape, const int32_t *in_strides, const int32_t *out_strides,
             const int8_t *x, int8_t *y) {
    if (rank <= 0) {
        y[0] = x[0];
        return;
    }
    const int32_t inner = shape[rank - 1], is = in_strides[rank - 1], os = out_strides[rank - 1];
    int32_t idx[EV_MAX_RANK] = {0}, outer = 1, xo = 0, yo = 0;
    for (int32_t d = 0; d < rank - 1; d++) outer *= shape[d];
    if (inner <= 0) return;
    for (int32_t o = 0; o < outer; o++) {
        if (is == 1 && os == 1)
            memcpy(y + yo, x + xo, (size_t)inner);
        else
            for (int32_t i = 0; i < inner; i++) y[yo + i * os] = x[xo + i * is];
        for (int32_t d = rank - 2; d >= 0; d--) { /* odometer over the outer axes */
            xo += in_strides[d];
            yo += out_strides[d];
            if (++idx[d] < shape[d]) break;
            xo -= shape[d] * in_strides[d];
            yo -= shape[d] * out_strides[d];
            idx[d] = 0;
        }
    }
}

void ev_gather(int32_t outer, int32_t axis_len, int32_t inner, const int32_t *indices, int32_t n_idx,
               const int8_t *x, int8_t *y) {
    for (int32_t o = 0; o < outer; o++, x += axis_len * inner) {
        for (int32_t t = 0; t < n_idx; t++, y += inner) {
            const int32_t j = indices[t] < 0 ? indices[t] + axis_len : indices[t]; /* np.take wraps negatives */
            memcpy(y, x + j * inner, (size_t)inner);
        }
    }
}
