/* ev_add, ev_mul (broadcasting), ev_rescale, ev_lut ↔ integer_ops.add / mul / rescale / lut. */
#include "ev_kernels.h"
#include "ev_common.h"

#define EV_ADD_LEFT_SHIFT 20 /* integer_ops.ADD_LEFT_SHIFT */

/* MBQM((x − z)·2^20, M, e): the shifted difference fits int32 (|x − z| ≤ 255) */
static inline int32_t add_input(int fast, int32_t v, int32_t mult, int32_t shift) {
    return fast ? ev_mbqm32_fast(v * (1 << EV_ADD_LEFT_SHIFT), mult, shift)
                : ev_mbqm((int64_t)v * (1 << EV_ADD_LEFT_SHIFT), mult, shift);
}

typedef struct { /* the parameters in locals, with the fast-path flags computed once per call */
    int32_t a_zp, b_zp, out_zp, a_mult, a_shift, b_mult, b_shift, out_mult, out_shift, mult, shift;
    int a_fast, b_fast, out_fast, fast;
} elt_t;

static inline int8_t add_one(const elt_t *q, int32_t a, int32_t b) {
    /* a' + b' saturated to int32 before the output MBQM, as the spec's sat32 */
    return ev_requant(q->out_fast, add_input(q->a_fast, a - q->a_zp, q->a_mult, q->a_shift),
                      add_input(q->b_fast, b - q->b_zp, q->b_mult, q->b_shift), q->out_mult, q->out_shift, q->out_zp);
}

static inline int8_t mul_one(const elt_t *q, int32_t a, int32_t b) {
    return ev_requant(q->fast, (a - q->a_zp) * (b - q->b_zp), 0, q->mult, q->shift, q->out_zp);
}

/* Walk the contiguous output in rows of the last axis; operand offsets follow their strides, the outer
 * axes advance like an odometer. Every element is read before it is written (in-place safe when y is a
 * contiguous operand). */
#define EV_BROADCAST_LOOP(D, ONE, Q)                                                                  \
    do {                                                                                              \
        const int32_t rank = (D)->rank > 0 ? (D)->rank : 1;                                           \
        const int32_t inner = (D)->rank > 0 ? (D)->shape[rank - 1] : 1;                               \
        const int32_t as = (D)->rank > 0 ? (D)->a_strides[rank - 1] : 0;                              \
        const int32_t bs = (D)->rank > 0 ? (D)->b_strides[rank - 1] : 0;                              \
        int32_t idx[EV_MAX_RANK] = {0}, outer = 1, ao = 0, bo = 0;                                    \
        for (int32_t d = 0; d < rank - 1; d++) outer *= (D)->shape[d];                                \
        if (inner <= 0) break;                                                                        \
        for (int32_t o = 0; o < outer; o++) {                                                         \
            if (as == 1 && bs == 1)                                                                   \
                for (int32_t i = 0; i < inner; i++) *y++ = ONE(Q, a[ao + i], b[bo + i]);              \
            else if (as == 1 && bs == 0)                                                              \
                for (int32_t i = 0; i < inner; i++) *y++ = ONE(Q, a[ao + i], b[bo]);                  \
            else                                                                                      \
                for (int32_t i = 0; i < inner; i++) *y++ = ONE(Q, a[ao + i * as], b[bo + i * bs]);    \
            for (int32_t d = rank - 2; d >= 0; d--) {                                                 \
                ao += (D)->a_strides[d];                                                              \
                bo += (D)->b_strides[d];                                                              \
                if (++idx[d] < (D)->shape[d]) break;                                                  \
                ao -= (D)->shape[d] * (D)->a_strides[d];                                              \
                bo -= (D)->shape[d] * (D)->b_strides[d];                                              \
                idx[d] = 0;                                                                           \
            }                                                                                         \
        }                                                                                             \
    } while (0)

void ev_add(const ev_add_t *p, const int8_t *a, const int8_t *b, int8_t *y) {
    const elt_t q = {p->a_zp, p->b_zp, p->out_zp, p->a_mult, p->a_shift, p->b_mult, p->b_shift, p->out_mult,
                     p->out_shift, 0, 0, ev_fast_ok(p->a_mult, p->a_shift), ev_fast_ok(p->b_mult, p->b_shift),
                     ev_fast_ok(p->out_mult, p->out_shift), 0};
    EV_BROADCAST_LOOP(&p->dims, add_one, &q);
}

void ev_mul(const ev_mul_t *p, const int8_t *a, const int8_t *b, int8_t *y) {
    const elt_t q = {p->a_zp, p->b_zp, p->out_zp, 0, 0, 0, 0, 0, 0, p->mult, p->shift, 0, 0, 0,
                     ev_fast_ok(p->mult, p->shift)};
    EV_BROADCAST_LOOP(&p->dims, mul_one, &q);
}

void ev_rescale(int32_t count, int32_t x_zp, int32_t mult, int32_t shift, int32_t out_zp, const int8_t *x, int8_t *y) {
    const int fast = ev_fast_ok(mult, shift);
    for (int32_t i = 0; i < count; i++) y[i] = ev_requant(fast, x[i] - x_zp, 0, mult, shift, out_zp);
}

void ev_lut(int32_t count, const int8_t table[256], const int8_t *x, int8_t *y) {
    for (int32_t i = 0; i < count; i++) y[i] = table[x[i] + 128];
}
