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

/* Fast add (e_a, e_b ∈ [−31, 0], M_a, M_b ≠ INT32_MIN; the usual case), ~25 instead of ~65 instructions per element.
 * With v = x − z ∈ [−255, 255] and y = v·2^21 (fits int32): SRDHM(v·2^20, M) = floor((y·M + 2^31) / 2^32) = SMMULR(y, M)
 * (the spec's SRDHM is floor((P + 2^30) / 2^31) of P = v·2^20·M, and never saturates here), and RDBPOT(h, n) =
 * floor((h + 2^(n−1) − [h<0]) / 2^n) for n ≥ 1, h for n = 0. |a'|, |b'| ≤ 255·2^20 + 1, so a' + b' never
 * saturates int32. */
typedef struct {
    uint32_t zy;                /* z·2^21 (mod 2^32) */
    int32_t mult, n, rnd, neg;  /* M, n = −e, 2^(n−1) (0 if n = 0), −1 if n ≥ 1 else 0 */
} add_in_t;

typedef struct {
    add_in_t a, b;
    int rq, out_fast;
    ev_rq_t q;
    int32_t out_mult, out_shift, out_zp;
} add_fast_t;

static inline int add_in_ok(int32_t mult, int32_t shift) { return mult != INT32_MIN && shift <= 0 && shift >= -31; }

static inline add_in_t add_in_make(int32_t zp, int32_t mult, int32_t shift) {
    add_in_t c = {(uint32_t)zp << 21, mult, -shift, shift < 0 ? (int32_t)(1u << (-shift - 1)) : 0, shift < 0 ? -1 : 0};
    return c;
}

static inline int32_t add_in(int32_t x, const add_in_t *c) {
    const int32_t y = (int32_t)(((uint32_t)x << 21) - c->zy);
    int32_t h;
#if EV_SIMD
    __asm__("smmulr %0, %1, %2" : "=r"(h) : "r"(y), "r"(c->mult));
#else
    h = (int32_t)(((int64_t)y * c->mult + (1LL << 31)) >> 32);
#endif
    return (h + ((h >> 31) & c->neg) + c->rnd) >> c->n;
}

static inline int8_t add_fast_one(const add_fast_t *q, int32_t a, int32_t b) {
    const int32_t s = add_in(a, &q->a) + add_in(b, &q->b);
    return q->rq ? ev_rq(s, q->q) : ev_requant(q->out_fast, s, 0, q->out_mult, q->out_shift, q->out_zp);
}

/* With add's table (ev_kernels.h): 2a' + 2b' < 2^30 in two loads and an add instead of two scalings, requantized
 * by ev_rq2 (a' + b' never saturates) */
typedef struct {
    const int32_t *ta, *tb;
    ev_rq2_t q;
} add_table_t;

static inline int8_t add_table_one(const add_table_t *q, int32_t a, int32_t b) {
    return ev_rq2(q->ta[(uint8_t)a] + q->tb[(uint8_t)b], q->q);
}

static void add_table_flat(const add_table_t *q, int32_t count, const int8_t *a, const int8_t *b, int8_t *y) {
    const int32_t *ta = q->ta, *tb = q->tb;
    const ev_rq2_t rq = q->q;
    int32_t i = 0;
    for (; i + 4 <= count; i += 4) { /* 4 per pass, all read before any store (y may be a or b) */
        const int32_t s0 = ta[(uint8_t)a[i]] + tb[(uint8_t)b[i]], s1 = ta[(uint8_t)a[i + 1]] + tb[(uint8_t)b[i + 1]];
        const int32_t s2 = ta[(uint8_t)a[i + 2]] + tb[(uint8_t)b[i + 2]], s3 = ta[(uint8_t)a[i + 3]] + tb[(uint8_t)b[i + 3]];
        y[i] = ev_rq2(s0, rq);
        y[i + 1] = ev_rq2(s1, rq);
        y[i + 2] = ev_rq2(s2, rq);
        y[i + 3] = ev_rq2(s3, rq);
    }
    for (; i < count; i++) y[i] = ev_rq2(ta[(uint8_t)a[i]] + tb[(uint8_t)b[i]], rq);
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

/* both operands laid out like the contiguous output (no broadcasting): one flat loop */
static int same_contiguous(const ev_broadcast_t *d) {
    int32_t st = 1;
    for (int32_t i = d->rank - 1; i >= 0; i--) {
        if (d->shape[i] != 1 && (d->a_strides[i] != st || d->b_strides[i] != st)) return 0;
        st *= d->shape[i];
    }
    return 1;
}

void ev_add(const ev_add_t *p, const int8_t *a, const int8_t *b, int8_t *y) {
    if (p->table && ev_rq2_ok(p->out_mult, p->out_shift)) {
        const add_table_t q = {p->table, p->table + 256, ev_rq2_make(p->out_mult, p->out_shift, p->out_zp)};
        if (p->dims.rank > 0 && same_contiguous(&p->dims)) {
            int32_t count = 1;
            for (int32_t i = 0; i < p->dims.rank; i++) count *= p->dims.shape[i];
            add_table_flat(&q, count, a, b, y);
            return;
        }
        EV_BROADCAST_LOOP(&p->dims, add_table_one, &q);
        return;
    }
    if (add_in_ok(p->a_mult, p->a_shift) && add_in_ok(p->b_mult, p->b_shift)) {
        const int rq = ev_rq_ok(p->out_mult, p->out_shift);
        const add_fast_t q = {add_in_make(p->a_zp, p->a_mult, p->a_shift), add_in_make(p->b_zp, p->b_mult, p->b_shift),
                              rq, ev_fast_ok(p->out_mult, p->out_shift),
                              ev_rq_make(rq ? p->out_mult : 0, rq ? p->out_shift : -2, p->out_zp), p->out_mult,
                              p->out_shift, p->out_zp};
        if (p->dims.rank > 0 && same_contiguous(&p->dims)) {
            int32_t count = 1;
            for (int32_t i = 0; i < p->dims.rank; i++) count *= p->dims.shape[i];
            if (rq)
                for (int32_t i = 0; i < count; i++) y[i] = ev_rq(add_in(a[i], &q.a) + add_in(b[i], &q.b), q.q);
            else
                for (int32_t i = 0; i < count; i++) y[i] = add_fast_one(&q, a[i], b[i]);
            return;
        }
        EV_BROADCAST_LOOP(&p->dims, add_fast_one, &q);
        return;
    }
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
    const int8_t *t = table + 128;
    int32_t i = 0;
    const uint8_t *u = (const uint8_t *)t;
    for (; i + 8 <= count; i += 8) { /* LDRSB, LDRB per element, ORR and STR per 4 (y may be x: read first) */
        const uint32_t v0 = u[x[i]], v1 = u[x[i + 1]], v2 = u[x[i + 2]], v3 = u[x[i + 3]];
        const uint32_t v4 = u[x[i + 4]], v5 = u[x[i + 5]], v6 = u[x[i + 6]], v7 = u[x[i + 7]];
        ev_st32(y + i, v0 | (v1 | (v2 | v3 << 8) << 8) << 8); /* nested: 3 ORR with shifted operand */
        ev_st32(y + i + 4, v4 | (v5 | (v6 | v7 << 8) << 8) << 8);
    }
    for (; i < count; i++) y[i] = t[x[i]];
}
