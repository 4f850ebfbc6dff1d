"""Neural-Engine report: per MIL op, is it expected to run on the Apple Neural Engine (ANE)?

Core ML decides at load time, per op, whether the ANE, GPU or CPU runs it, and Apple publishes no complete
list of ANE constraints. This module applies the rules below to the program that ships (read back from
the package) and says which ops are likely to fall back. It is an *expectation*, not a measurement: only
Xcode's Core ML performance report or `MLComputePlan` on a Mac/iPhone (see macos.py) can confirm it.

Each rule says where it comes from and whether that source is Apple's own publication ("published") or
an observation by others / our inference ("inferred"). Sources:

  [TE]  coremltools guide "Typed Execution" (apple.github.io/coremltools/docs-guides/source/typed-execution.html):
        ML programs compiled with fp32 precision run on CPU/GPU; the Neural Engine executes fp16.
  [FS]  coremltools guide "Flexible Input Shapes" (…/docs-guides/source/flexible-inputs.html): models with
        enumerated shapes can use the Neural Engine, range (unbounded) shapes may run on CPU/GPU only.
  [ANE] Apple ML Research, "Deploying Transformers on the Apple Neural Engine" (2022,
        machinelearning.apple.com/research/neural-engine-transformers) and its reference code
        github.com/apple/ml-ane-transformers: principle 1 — the ANE's preferred layout is 4-D channels-first
        (B, C, 1, S) and the last axis of an ANE buffer is padded to 64 bytes, so a short last axis wastes
        memory/bandwidth; principle 2 — chunk large intermediate tensors (split multi-head attention into
        per-head ops); principle 3 — minimize memory copies (reshape/transpose).
  [HOL] M. Hollemans, github.com/hollance/neural-engine, docs/unsupported-layers.md — experiments, marked by
        its author as "incomplete and possibly wrong": gather, dilated convolutions, RNN layers and custom
        layers are known not to run on the ANE.
  [RANK] Community observations (e.g. the same repository, coremltools issues): ANE buffers are at most
        rank 5; higher-rank tensors run elsewhere. Not published by Apple.

Rules with severity "fallback" mark an op as expected off the ANE; "warn" rules flag ANE-resident ops
that are likely slow (padding, copies), as advice.
"""

from __future__ import annotations

from collections import Counter

RULES = [
    {"id": "fp16-only", "severity": "fallback", "kind": "published", "source": "[TE] coremltools Typed Execution",
     "text": "The Neural Engine computes in float16: ops whose outputs are float32 (an fp32 program) run on "
             "GPU/CPU."},
    {"id": "integer-or-string", "severity": "fallback", "kind": "inferred", "source": "[TE], our inference",
     "text": "Ops producing integer, bool or string values (shape arithmetic, class labels) are not Neural-Engine "
             "work; expect CPU."},
    {"id": "dynamic-shape", "severity": "fallback", "kind": "published", "source": "[FS] coremltools Flexible Input Shapes",
     "text": "Unbounded (range) dimensions keep a model off the Neural Engine; static or enumerated shapes are fine."},
    {"id": "unsupported-op", "severity": "fallback", "kind": "inferred",
     "source": "[HOL] hollance/neural-engine docs/unsupported-layers.md (experimental)",
     "text": "gather, dilated conv, RNN layers (lstm/gru/rnn) and custom layers are reported not to run on the ANE."},
    {"id": "rank>5", "severity": "fallback", "kind": "inferred", "source": "[RANK] community observations",
     "text": "Tensors above rank 5 are reported not to fit ANE buffers."},
    {"id": "last-axis-64B", "severity": "warn", "kind": "published", "source": "[ANE] principle 1",
     "text": "The last axis of an ANE buffer is padded to 64 bytes: a float16 last axis shorter than 32 wastes "
             "bandwidth (prefer (B, C, 1, S) layouts with the sequence last)."},
    {"id": "memory-copy", "severity": "warn", "kind": "published", "source": "[ANE] principle 3",
     "text": "reshape/transpose are memory copies on the ANE; fewer is faster."},
    {"id": "large-intermediate", "severity": "warn", "kind": "published", "source": "[ANE] principle 2",
     "text": "Large intermediates (e.g. multi-head attention scores in one tensor) may not stay in the ANE's "
             "cache; split them (per-head attention)."},
]

UNSUPPORTED_OPS = {"gather", "gather_nd", "gather_along_axis", "lstm", "gru", "rnn", "while_loop", "cond",
                   "custom_op", "non_maximum_suppression", "argsort", "topk"}
COPY_OPS = {"reshape", "transpose"}
LARGE_BYTES = 1 << 20  # fp16 attention-score tensor above 1 MiB: flag as a large intermediate (our threshold)


def _dtype_name(var) -> str:
    from coremltools.converters.mil.mil import types

    try:
        return types.builtin_to_string(var.dtype)
    except Exception:
        return str(var.dtype)


def _static(shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def classify_op(op) -> dict:
    """The rule verdicts for one MIL op."""
    outs = [v for v in op.outputs]
    reasons, warnings = [], []
    dtypes = [_dtype_name(v) for v in outs]
    shapes = [list(v.shape) if hasattr(v, "shape") and v.shape is not None else [] for v in outs]
    if any(d == "fp32" for d in dtypes):
        reasons.append("fp16-only")
    if any(d not in ("fp16", "fp32") for d in dtypes):
        reasons.append("integer-or-string")
    if any(not _static(s) for s in shapes):
        reasons.append("dynamic-shape")
    if op.op_type in UNSUPPORTED_OPS or (op.op_type == "conv" and op.dilations is not None
                                         and any(int(d) != 1 for d in op.dilations.val)):
        reasons.append("unsupported-op")
    if any(len(s) > 5 for s in shapes):
        reasons.append("rank>5")
    if op.op_type in COPY_OPS:
        warnings.append("memory-copy")
    last = [s[-1] for s in shapes if s and _static(s)]
    if last and min(last) < 32 and op.op_type not in ("cast",):
        warnings.append("last-axis-64B")
    if op.op_type == "softmax" and shapes and _static(shapes[0]):
        n = 1
        for d in shapes[0]:
            n *= d
        if n * 2 > LARGE_BYTES:
            warnings.append("large-intermediate")
    return {"op": op.name, "type": op.op_type, "shape": shapes[0] if len(shapes) == 1 else shapes,
            "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
            "neural_engine": "fallback" if reasons else "expected", "reasons": reasons, "warnings": warnings}


def report(program, rewrites: list[dict], precision: str) -> dict:
    """The Neural-Engine section of the compile report for `program` (the package's main function).

    cast ops at the program boundary (fp32 model inputs/outputs ↔ fp16 compute) are listed but not counted
    as fallbacks: Core ML converts I/O wherever the neighbouring ops run.
    """
    func = program.functions["main"]
    boundary = {v.name for v in func.inputs.values()} | {v.name for v in func.outputs}
    ops = []
    for op in func.operations:
        if op.op_type == "const" or op.op_type.startswith("constexpr_"):
            continue
        entry = classify_op(op)
        touches_io = any(v.name in boundary for v in op.outputs) or any(
            getattr(v, "name", None) in boundary for v in op.inputs.values() if not isinstance(v, (list, tuple)))
        if op.op_type == "cast" and touches_io:
            entry["neural_engine"] = "io-cast"
            entry["reasons"] = []
        ops.append(entry)
    fallback = [o for o in ops if o["neural_engine"] == "fallback"]
    counted = [o for o in ops if o["neural_engine"] != "io-cast"]
    by_reason = Counter(r for o in fallback for r in o["reasons"])
    warn = Counter(w for o in ops for w in o["warnings"])
    rewrite_counts = Counter(r["rewrite"] for r in rewrites)
    expected = len(counted) - len(fallback)
    if precision == "fp32":
        verdict = "fp32 program: Core ML runs it on GPU/CPU, not the Neural Engine (compile with fp16 for the ANE)"
    elif not fallback:
        verdict = "every op is expected to run on the Neural Engine"
    else:
        verdict = f"{len(fallback)} of {len(counted)} ops are likely to fall back to GPU/CPU"
    return {
        "verdict": verdict,
        "expected_on_neural_engine": expected,
        "likely_fallback": len(fallback),
        "ops_considered": len(counted),
        "fallback_by_rule": dict(by_reason),
        "fallback_ops": [{"op": o["op"], "type": o["type"], "reasons": o["reasons"]} for o in fallback],
        "fallback_types": dict(Counter(o["type"] for o in fallback)),
        "warnings_by_rule": dict(warn),
        "rewrites_applied": dict(rewrite_counts),
        "rewrites": rewrites,
        "not_applied": [
            "(B, C, 1, S) channels-first layout for token (B, N, C) blocks [ANE principle 1]: edgevit keeps the "
            "exported layout; token-layout linear/layer_norm ops are reported under last-axis-64B when short",
        ],
        "rules": RULES,
        "ops": ops,
        "caveat": "expectation from documented and community rules, not a measurement; confirm with Xcode's "
                  "Core ML performance report or MLComputePlan on a device (edgevit.backends.coreml.macos)",
    }
