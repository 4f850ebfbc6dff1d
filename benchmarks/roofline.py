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

# One thread's loop: 12 independent FMA chains (enough to cover FMA latency × pipes on current x86 cores);
# the empty asm keeps the compiler from folding the loop away.
KERNEL = r"""
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define ITERS 50000000L
static void *run(void *out) {
    VEC a[12]; for (int i = 0; i < 12; i++) a[i] = SET1((float)i);
    VEC x = SET1(0.999999f), y = SET1(1e-7f);
    for (long n = 0; n < ITERS; n++) {
        a[0] = FMA(a[0], x, y); a[1] = FMA(a[1], x, y); a[2] = FMA(a[2], x, y); a[3] = FMA(a[3], x, y);
        a[4] = FMA(a[4], x, y); a[5] = FMA(a[5], x, y); a[6] = FMA(a[6], x, y); a[7] = FMA(a[7], x, y);
        a[8] = FMA(a[8], x, y); a[9] = FMA(a[9], x, y); a[10] = FMA(a[10], x, y); a[11] = FMA(a[11], x, y);
        __asm__ volatile("" ::: "memory");
    }
    float s = 0; for (int i = 0; i < 12; i++) { float l[LANES]; STORE(l, a[i]); s += l[0]; }
    *(float *)out = s; return 0;
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
             "-DVEC=__m256 -DLANES=8 -DSET1=_mm256_set1_ps -DFMA=_mm256_fmadd_ps -DSTORE=_mm256_storeu_ps"),
    "AVX-512": ("avx512f", ["-mavx512f", "-mfma"],
                "-DVEC=__m512 -DLANES=16 -DSET1=_mm512_set1_ps -DFMA=_mm512_fmadd_ps -DSTORE=_mm512_storeu_ps"),
}


def peak_gflops(isa: str, threads: int) -> float | None:
    """Measured fp32 FMA GFLOP/s of this machine with `isa` on `threads` threads (None: the CPU lacks it)."""
    flag, cflags, defines = ISAS[isa]
    if flag not in Path("/proc/cpuinfo").read_text().split():
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
