/* edgevit's AVX-512 fp32 GEMM micro-kernels, called from TVM-scheduled 1x1 convolutions and matmuls.

   ev_gemm_f32_<MR>x<NV>: C[MR][16*NV] += A[MR][K] * B[K][16*NV], rows strided by lda/ldb/ldc (in floats).
   The MR x NV accumulators live in zmm registers for the whole K loop: per k, MR broadcasts of A and NV loads
   of B feed MR*NV FMAs. TVM's own code for the same tile keeps LLVM from doing that past ~14 accumulators
   (it spills them to the stack); these run at 90+ % of the FMA peak measured by benchmarks/roofline.py.
   Linked into the model's shared library by edgevit (tensorize + call_extern); the attribute selects AVX-512
   for these functions only, so the file builds with the host compiler's default flags. */
#include <immintrin.h>
#include <stdint.h>

#define EV_GEMM(MR, NV)                                                                                        \
  __attribute__((target("avx512f,fma"))) int32_t ev_gemm_f32_##MR##x##NV(                                      \
      const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t K) {            \
    __m512 acc[MR][NV];                                                                                        \
    for (int i = 0; i < MR; ++i)                                                                               \
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_loadu_ps(C + i * ldc + 16 * j);                          \
    for (int64_t k = 0; k < K; ++k)                                                                            \
      for (int i = 0; i < MR; ++i) {                                                                           \
        __m512 a = _mm512_set1_ps(A[i * lda + k]);                                                             \
        for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_fmadd_ps(a, _mm512_loadu_ps(B + k * ldb + 16 * j), acc[i][j]); \
      }                                                                                                        \
    for (int i = 0; i < MR; ++i)                                                                               \
      for (int j = 0; j < NV; ++j) _mm512_storeu_ps(C + i * ldc + 16 * j, acc[i][j]);                         \
    return 0;                                                                                                  \
  }

#ifdef __cplusplus
extern "C" {
#endif
/* the tiles edgevit's scheduler picks from (adapter.GEMM_TILES): MR rows x NV zmm, MR * NV <= 28 accumulators */
EV_GEMM(1, 1) EV_GEMM(1, 2) EV_GEMM(1, 3) EV_GEMM(1, 4)
EV_GEMM(2, 1) EV_GEMM(2, 2) EV_GEMM(2, 3) EV_GEMM(2, 4)
EV_GEMM(3, 1) EV_GEMM(3, 2) EV_GEMM(3, 3) EV_GEMM(3, 4)
EV_GEMM(4, 1) EV_GEMM(4, 2) EV_GEMM(4, 3) EV_GEMM(4, 4)
EV_GEMM(5, 1) EV_GEMM(5, 2) EV_GEMM(5, 3) EV_GEMM(5, 4)
EV_GEMM(6, 1) EV_GEMM(6, 2) EV_GEMM(6, 3) EV_GEMM(6, 4)
EV_GEMM(7, 1) EV_GEMM(7, 2) EV_GEMM(7, 3) EV_GEMM(7, 4)
EV_GEMM(8, 1) EV_GEMM(8, 2) EV_GEMM(8, 3)
#ifdef __cplusplus
}
#endif
