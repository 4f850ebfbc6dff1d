"""How fast could a model possibly run here? FMA peak of this machine per vector ISA vs the model's FLOPs.

    .venv/bin/python benchmarks/roofline.py [--model efficientformer_l1] [--threads 2] [--markdown out.md]

Measures the fp32 FMA throughput of this machine (a C kernel of 12 independent FMA chains per thread, built
with gcc once for AVX2 (256-bit) and once for AVX-512 (512-bit), run on --threads threads), counts the
model's multiply-accumulates (conv/gemm/matmul; edgevit's ONNX analysis), and prints the latency floor:
2 × MACs ÷ peak, the time the model would take with every FMA unit busy every cycle and nothing else
costing anything. Beside it, the latest `edgevit bench` medians for that model (out/bench/<model>-<target>/)
and the fraction of the ISA's peak each runtime reaches. A goal below a floor cannot be met with that ISA.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# One thread's loop: 12 independent FMA chains (enough to cover FMA latency × pipes on current x86 cores). The
# result is printed, and without -ffast-math the compiler may not reassociate, so every FMA is executed.
KERNEL = r"""
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define ITERS 50000000L
#define STEP a0 = FMA(a0, x, y); a1 = FMA(a1, x, y); a2 = FMA(a2, x, y); a3 = FMA(a3, x, y); \
    a4 = FMA(a4, x, y); a5 = FMA(a5, x, y); a6 = FMA(a6, x, y); a7 = FMA(a7, x, y); \
    a8 = FMA(a8, x, y); a9 = FMA(a9, x, y); a10 = FMA(a10, x, y); a11 = FMA(a11, x, y);
static void *run(void *out) {
    /* named accumulators, never in memory: the compiler keeps all 12 chains in registers */
    VEC a0 = SET1(0), a1 = SET1(1), a2 = SET1(2), a3 = SET1(3), a4 = SET1(4), a5 = SET1(5);
    VEC a6 = SET1(6), a7 = SET1(7), a8 = SET1(8), a9 = SET1(9), a10 = SET1(10), a11 = SET1(11);
    VEC x = SET1(0.999999f), y = SET1(1e-7f);
    for (long n = 0; n < ITERS; n++) { STEP }
    VEC s = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));
    s = ADD(s, ADD(ADD(a8, a9), ADD(a10, a11)));
    float l[LANES]; STORE(l, s);
    *(float *)out = l[0]; return 0;
}
int main(int argc, char **argv) {
    int threads = atoi(argv[1]); pthread_t t[64]; float r[64]; struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < threads; i++) pthread_create(&t[i], 0, run, &r[i]);
    for (int i = 0; i < threads; i++) pthread_join(t[i], 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("%f\n", threads * (double)ITERS * 12 * LANES * 2 / s / 1e9);
    return 0;
}
"""
ISAS = {  # name: (cpuinfo flag, gcc flags, defines)
    "AVX2": ("avx2", ["-mavx2", "-mfma"],
             "-DVEC=__m256 -DLANES=8 -DSET1=_mm256_set1_ps -DFMA=_mm256_fmadd_ps -DADD=_mm256_add_ps -DSTORE=_mm256_storeu_ps"),
    "AVX-512": ("avx512f", ["-mavx512f", "-mfma"],
                "-DVEC=__m512 -DLANES=16 -DSET1=_mm512_set1_ps -DFMA=_mm512_fmadd_ps -DADD=_mm512_add_ps -DSTORE=_mm512_storeu_ps"),
}


def peak_gflops(isa: str, threads: int) -> float | None:
    """Measured fp32 FMA GFLOP/s of this machine with `isa` on `threads` threads (None: the CPU lacks it)."""
    flag, cflags, defines = ISAS[isa]
    from edgevit.backends.tvm import host_cpu_flags

    if flag not in host_cpu_flags():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "peak.c", Path(tmp) / "peak"
        src.write_text(KERNEL)
        subprocess.run(["gcc", "-O2", *cflags, *defines.split(), "-pthread", str(src), "-o", str(exe)], check=True)
        return max(float(subprocess.run([str(exe), str(threads)], capture_output=True, text=True, check=True).stdout)
                   for _ in range(3))


def model_macs(name: str) -> int:
    from edgevit.frontend.export import export
    from edgevit.frontend.source import resolve
    from edgevit.ir.analysis import analyze

    return analyze(export(resolve(name), samples=1).model).macs


def bench_medians(name: str) -> dict[str, dict[str, float]]:
    """{target: {runtime: median ms}} from the `edgevit bench` reports of `name` under out/bench/."""
    found = {}
    for path in sorted((REPO / "out" / "bench").glob(f"{name}-*/{name}.bench.json")):
        doc = json.loads(path.read_text())
        found[doc["target"]] = {r["runtime"]: r["median_ms"] for r in doc["results"] if r.get("median_ms")}
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientformer_l1")
    ap.add_argument("--threads", type=int, default=2, help="the cores the runtimes use (targets' num-cores)")
    ap.add_argument("--markdown", help="also write the table here")
    args = ap.parse_args()
    gflop = 2 * model_macs(args.model) / 1e9
    medians = bench_medians(args.model)
    peaks = {isa: peak_gflops(isa, args.threads) for isa in ISAS}
    lines = [f"{args.model}: {gflop:.3f} GFLOP (2 × multiply-accumulates of conv/gemm/matmul), {args.threads} threads",
             "", "| ISA | measured FMA peak GFLOP/s | floor ms (every FMA unit busy every cycle) |", "|---|---|---|"]
    for isa, peak in peaks.items():
        lines.append(f"| {isa} | {peak:.0f} | {gflop / peak * 1e3:.2f} |" if peak else f"| {isa} | not on this CPU | |")
    known = {isa: p for isa, p in peaks.items() if p}
    lines += ["", "| runtime (bench target) | median ms | GFLOP/s | " + " | ".join(f"share of {i} peak" for i in known) + " |",
              "|---|---|---|" + "---|" * len(known)]
    for tgt, by in medians.items():
        for runtime, ms in by.items():
            rate = gflop / ms * 1e3
            lines.append(f"| {runtime} ({tgt}) | {ms:.2f} | {rate:.0f} | "
                         + " | ".join(f"{rate / p:.0%}" for p in known.values()) + " |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
