/* edgevit's x86 fp32 GEMM micro-kernels, called from TVM-scheduled 1x1 convolutions and matmuls.

   ev_gemm_f32_<isa>_<MR>x<NV>: C[MR][L*NV] += A[MR][K] * B[K][L*NV], rows strided by lda/ldb/ldc (in floats),
   L = 16 lanes (avx512, zmm) or 8 (avx2, ymm). The MR x NV accumulators stay in vector registers for the whole
   K loop: per k, MR broadcasts of A and NV loads of B feed MR*NV FMAs. TVM's own code for the same tile keeps
   LLVM from doing that past ~14 accumulators (it spills them to the stack).
   Linked into the model's shared library by edgevit (tensorize + call_extern); the target attribute selects
   the ISA per function, so the file builds with the host compiler's default flags. */
#include <immintrin.h>
#include <stdint.h>

/* a quarter of L2 (1 MiB per core here): the panel in use, the next one, the A rows and the C tile all stay */
#define EV_PREFETCH_MAX_BYTES (256 * 1024)

#define EV_GEMM(ISA, ATTR, VEC, LANES, LOAD, STORE, SET1, FMA, MR, NV)                                         \
  __attribute__((target(ATTR))) int32_t ev_gemm_f32_##ISA##_##MR##x##NV(                                       \
      const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc, int64_t K) {            \
    VEC acc[MR][NV];                                                                                           \
    for (int i = 0; i < MR; ++i)                                                                               \
      for (int j = 0; j < NV; ++j) acc[i][j] = LOAD(C + i * ldc + LANES * j);                                  \
    /* B packed into panels (ldb = the tile's width; an unpacked B exactly one tile wide looks the same and    \
       gets a harmless prefetch past its end): the next panel follows this one. Pull it into L2 while        \
       this one is in use, if both fit there, so the first row tile of each panel does not wait on DRAM     \
       (efficientformer_l1's stage-4 fc1 and attention qkv: ~10 % faster). */                               \
    const int prefetch = ldb == LANES * NV && K * ldb * (int64_t)sizeof(float) <= EV_PREFETCH_MAX_BYTES;     \
    for (int64_t k = 0; k < K; ++k) {                                                                          \
      if (prefetch)                                                                                            \
        for (int j = 0; j < NV; ++j) _mm_prefetch((const char*)(B + (K + k) * ldb + LANES * j), _MM_HINT_T1);  \
      for (int i = 0; i < MR; ++i) {                                                                           \
        VEC a = SET1(A[i * lda + k]);                                                                          \
        for (int j = 0; j < NV; ++j) acc[i][j] = FMA(a, LOAD(B + k * ldb + LANES * j), acc[i][j]);             \
      }                                                                                                        \
    }                                                                                                          \
    for (int i = 0; i < MR; ++i)                                                                               \
      for (int j = 0; j < NV; ++j) STORE(C + i * ldc + LANES * j, acc[i][j]);                                  \
    return 0;                                                                                                  \
  }
#define AVX512(MR, NV) EV_GEMM(avx512, "avx512f,fma", __m512, 16, _mm512_loadu_ps, _mm512_storeu_ps, \
                               _mm512_set1_ps, _mm512_fmadd_ps, MR, NV)
#define AVX2(MR, NV) EV_GEMM(avx2, "avx2,fma", __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps, \
                             _mm256_set1_ps, _mm256_fmadd_ps, MR, NV)

#ifdef __cplusplus
extern "C" {
#endif
/* the tiles edgevit's scheduler picks from (adapter.GEMM_TILES): MR rows x NV vectors whose MR*NV accumulators, NV
   vectors of B and one broadcast of A fit the 32 zmm (AVX-512) or 16 ymm (AVX2) registers; past that gcc keeps an
   accumulator on the stack (7x4: slower than 7x2) */
AVX512(1, 1) AVX512(1, 2) AVX512(1, 3) AVX512(1, 4)
AVX512(2, 1) AVX512(2, 2) AVX512(2, 3) AVX512(2, 4)
AVX512(3, 1) AVX512(3, 2) AVX512(3, 3) AVX512(3, 4)
AVX512(4, 1) AVX512(4, 2) AVX512(4, 3) AVX512(4, 4)
AVX512(5, 1) AVX512(5, 2) AVX512(5, 3) AVX512(5, 4)
AVX512(6, 1) AVX512(6, 2) AVX512(6, 3) AVX512(6, 4)
AVX512(7, 1) AVX512(7, 2) AVX512(7, 3)
AVX512(8, 1) AVX512(8, 2) AVX512(8, 3)
AVX2(1, 1) AVX2(1, 2) AVX2(1, 3) AVX2(1, 4)
AVX2(2, 1) AVX2(2, 2) AVX2(2, 3) AVX2(2, 4)
AVX2(3, 1) AVX2(3, 2) AVX2(3, 3)
AVX2(4, 1) AVX2(4, 2) AVX2(4, 3)
AVX2(5, 1) AVX2(5, 2)
AVX2(6, 1) AVX2(6, 2)
AVX2(7, 1)
AVX2(8, 1)
#ifdef __cplusplus
}
#endif
