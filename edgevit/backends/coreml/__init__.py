"""Core ML backend: optimized ONNX → MIL program (MIL Builder) → `.mlpackage` for iPhone targets.

out/ receives `<name>.mlpackage` (an ML program: FP16 compute by default, `--precision fp32` optional;
optional image input with the normalization folded in, optional class labels, optional compressed weights)
and the compile report. Steps:

  1. lower.py turns the optimized ONNX into a MIL program at the target's deployment opset (an op without a
     lowering: one-line error, exit 2, nothing written);
  2. `coremltools.convert` runs its MIL pass pipeline (FP16 casts for fp16) and writes the spec; metadata,
     image preprocessing (scale/bias) and the classifier are added there; `--weights` compresses with
     `coremltools.optimize.coreml`;
  3. the saved package is read back (spec + weights, `MLModel(skip_model_load=True)`), its inputs, outputs
     and op counts are checked against what the report says, and the program *read back* is run by
     evaluate.py (numpy) on seeded inputs and compared with onnxruntime on the optimized ONNX: fp32 must be
     within 1e-4 × the output range (else ParityError, exit 1); fp16/compressed builds report their error and
     top-1 agreement (non-finite outputs fail);
  4. ane.py reports which ops are expected on the Neural Engine; macos.py times the package on macOS only.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from .. import BackendResult
from ... import __version__, ui
from ...artifacts import md_table, normalize_mlpackage
from ...errors import EdgevitError, ParityError
from ...ir import graph as G
from ...ir.numerics import Parity, run_ort

TOLERANCE = 1e-4  # fp32: max abs error vs onnxruntime, as a fraction of the output range
SAMPLES = 4  # seeded inputs for the parity check in `compile`
DEPLOYMENT_TARGETS = ("iOS15", "iOS16", "iOS17", "iOS18")
COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
WEIGHTS = ("int8", "palettize4", "palettize6")
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@functools.cache
def coremltools():
    """coremltools, imported quietly: its import-time warnings (untested torch/sklearn versions, no native
    predictor on Linux) and the pass-pipeline progress bars would clutter the terminal."""
    for name in ("coremltools",):
        logging.getLogger(name).setLevel(logging.ERROR)
    import coremltools as ct
    from coremltools.converters.mil.mil.passes import pass_pipeline
    from tqdm import tqdm

    from coremltools.optimize.coreml import _post_training_quantization, _quantization_passes

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    for module in (pass_pipeline, _post_training_quantization, _quantization_passes):
        module.tqdm = functools.partial(tqdm, disable=True)
    return ct


def _options(target, args) -> dict:
    opts = dict(target.options)
    precision = getattr(args, "precision", None) or opts.get("precision", "fp16")
    if precision not in ("fp16", "fp32"):
        raise EdgevitError(f"{target.path}: precision '{precision}' is not fp16 or fp32")
    deployment = opts.get("minimum_deployment_target", "iOS16")
    if deployment not in DEPLOYMENT_TARGETS:
        raise EdgevitError(f"{target.path}: minimum_deployment_target '{deployment}' is not one of "
                           f"{', '.join(DEPLOYMENT_TARGETS)}")
    units = opts.get("compute_units", "ALL")
    if units not in COMPUTE_UNITS:
        raise EdgevitError(f"{target.path}: compute_units '{units}' is not one of {', '.join(COMPUTE_UNITS)}")
    weights = getattr(args, "weights", None)
    if weights and weights not in WEIGHTS:
        raise EdgevitError(f"--weights {weights}: choose from {', '.join(WEIGHTS)}")
    return {**opts, "precision": precision, "minimum_deployment_target": deployment, "compute_units": units,
            "weights": weights}


def read_labels(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise EdgevitError(f"--labels {path}: no such file (give a text file with one class label per line)")
    try:
        labels = [line.strip() for line in p.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgevitError(f"--labels {path}: cannot read it as text: {exc}") from None
    if not labels:
        raise EdgevitError(f"--labels {path}: the file holds no labels (one per line)")
    if len(set(labels)) != len(labels):
        dup = next(label for label in labels if labels.count(label) > 1)
        raise EdgevitError(f"--labels {path}: label '{dup}' appears more than once")
    return labels


def check_args(target, args) -> None:
    """Option errors before any model work (called by `edgevit compile`)."""
    _options(target, args)
    if getattr(args, "labels", None):
        read_labels(args.labels)
    if getattr(args, "image_input", False) and (getattr(args, "batch", None) or 1) != 1:
        raise EdgevitError("--image-input takes one image per prediction: drop --batch or use --batch 1")


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """(mean, std, where from) of the model's expected input: timm's pretrained config for zoo models."""
    try:
        from ... import zoo

        entry = zoo.entries().get(name)
        if entry is not None and entry.source == "timm":
            import timm

            cfg = timm.models.get_pretrained_cfg(name)
            if cfg is not None and getattr(cfg, "mean", None) and getattr(cfg, "std", None):
                return tuple(cfg.mean), tuple(cfg.std), f"timm pretrained config of {name}"
    except Exception:  # pragma: no cover - zoo/timm trouble: fall back to ImageNet statistics
        pass
    return IMAGENET[0], IMAGENET[1], "ImageNet mean/std (default)"


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _compress(mlmodel, mode: str):
    ct = coremltools()
    import coremltools.optimize.coreml as cto

    if mode == "int8":
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int8", granularity="per_channel"))
        return cto.linear_quantize_weights(mlmodel, config), "int8 linear symmetric, per output channel"
    nbits = {"palettize4": 4, "palettize6": 6}[mode]
    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=nbits,
                                                                          granularity="per_tensor"))
    del ct
    return cto.palettize_weights(mlmodel, config), f"{nbits}-bit k-means palettization (one LUT per tensor)"


def _spec_summary(spec) -> dict:
    """Inputs, outputs and non-const op counts as stored in the package's protobuf spec."""
    def feature(f):
        kind = f.type.WhichOneof("Type")
        entry = {"name": f.name, "type": kind}
        if kind == "multiArrayType":
            entry["shape"] = list(f.type.multiArrayType.shape)
            entry["dtype"] = {65552: "fp16", 65568: "fp32", 131104: "int32"}.get(f.type.multiArrayType.dataType,
                                                                                   str(f.type.multiArrayType.dataType))
        elif kind == "imageType":
            entry["shape"] = [1, 3, f.type.imageType.height, f.type.imageType.width]
            entry["color_space"] = {10: "GRAYSCALE", 20: "RGB", 30: "BGR"}.get(f.type.imageType.colorSpace, "?")
        return entry

    func = spec.mlProgram.functions["main"]
    block = func.block_specializations[func.opset]
    ops: dict[str, int] = {}
    for op in block.operations:
        if op.type != "const":
            ops[op.type] = ops.get(op.type, 0) + 1
    return {"inputs": [feature(f) for f in spec.description.input],
            "outputs": [feature(f) for f in spec.description.output],
            "ops": dict(sorted(ops.items())), "specification_version": spec.specificationVersion,
            "opset": func.opset}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def check_numerics(program, model: onnx.ModelProto, lowered, *, samples: int, image: dict | None,
                   classifier: bool, force_fp16: bool = False, seed: int = 0) -> dict:
    """Run `program` (evaluate.py) and onnxruntime on the same seeded inputs; compare outputs.

    Image inputs are fed as pixels in [0, 255] to the program and normalized for onnxruntime. A classifier
    program is compared on its probabilities (softmax of the ONNX logits) and predicted label.
    """
    from .evaluate import evaluate

    shapes = G.static_input_shapes(model)
    parity, agree, total = Parity(), 0, 0
    session = None
    from ...ir.numerics import ort_session

    session = ort_session(model)
    for k in range(samples):
        feeds = G.seeded_inputs(model, shapes, seed + k)
        program_feeds = {}
        for spec_in, (name, value) in zip(lowered.inputs, feeds.items()):
            if image is not None:
                rng = np.random.default_rng(seed + k)
                pixels = rng.uniform(0, 255, value.shape).astype(np.float32)
                mean = np.array(image["mean"], np.float32).reshape(1, -1, 1, 1)
                std = np.array(image["std"], np.float32).reshape(1, -1, 1, 1)
                feeds[name] = ((pixels / 255.0 - mean) / std).astype(np.float32)
                value = pixels
            program_feeds[spec_in["name"]] = value
        ref = run_ort(model, feeds, session)
        got = evaluate(program, program_feeds, force_fp16=force_fp16)
        if classifier:
            probs = [v for v in got.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"][0]
            pairs = [(_softmax(ref[0].astype(np.float64)), probs)]
        else:
            pairs = list(zip(ref, [got[o["name"]] for o in lowered.outputs]))
        for r, g in pairs:
            g = np.asarray(g, np.float32).reshape(r.shape)
            parity.update(r, g)
            if r.ndim == 2:  # (batch, classes): top-1 agreement per row
                agree += int((r.argmax(-1) == g.argmax(-1)).sum())
                total += r.shape[0]
    out = parity.as_dict()
    out["relative_to_range"] = out["max_abs"] / out["ref_range"] if out["ref_range"] else out["max_abs"]
    out["top1_agreement"] = agree / total if total else None
    out["compared_on"] = "class probabilities" if classifier else "model outputs"
    return out


def compile_model(model: onnx.ModelProto, target, out_dir: Path, name: str, args=None) -> BackendResult:
    """Compile `model` for `target` into `out_dir`; see the module docstring."""
    from . import ane, macos
    from .evaluate import load_package, op_histogram
    from .lower import lower

    ct = coremltools()
    opts = _options(target, args)
    seconds: dict[str, float] = {}
    precision = opts["precision"]
    labels = read_labels(args.labels) if getattr(args, "labels", None) else None
    image = None
    input_scale = None
    graph_inputs = G.graph_inputs(model)
    if getattr(args, "image_input", False):
        shape = G.value_shape(graph_inputs[0]) if len(graph_inputs) == 1 else None
        if shape is None or len(shape) != 4 or shape[1] != 3 or shape[0] != 1:
            raise EdgevitError(f"--image-input needs one 1x3xHxW input, the model has "
                               f"{[G.value_shape(v) for v in graph_inputs]}")
        mean, std, source = normalization(name)
        image = {"mean": list(mean), "std": list(std), "normalization_source": source,
                 "color_layout": "RGB", "scale": 1 / 255.0, "bias": [-m for m in mean]}
        input_scale = {graph_inputs[0].name: 1.0 / np.array(std, np.float32)}

    start = time.perf_counter()
    deployment = getattr(ct.target, opts["minimum_deployment_target"])
    with ui.step(f"lower ONNX to a MIL program ({opts['minimum_deployment_target']} opset)"):
        lowered = lower(model, deployment, opts, input_scale)
    seconds["lower"] = round(time.perf_counter() - start, 3)

    classifier = None
    if labels is not None:
        outs = lowered.outputs
        if len(outs) != 1 or len(outs[0]["shape"]) != 2 or outs[0]["shape"][0] != 1:
            raise EdgevitError(f"--labels needs one (1, classes) output; the model's outputs are "
                               f"{[o['shape'] for o in outs]}")
        if outs[0]["shape"][1] != len(labels):
            raise EdgevitError(f"--labels {args.labels} has {len(labels)} labels but the model has "
                               f"{outs[0]['shape'][1]} classes")
        _append_softmax(lowered)
        classifier = ct.ClassifierConfig(labels, predicted_feature_name="classLabel",
                                         predicted_probabilities_output=lowered.outputs[0]["name"])

    inputs = None
    if image is not None:
        inputs = [ct.ImageType(name=lowered.inputs[0]["name"], shape=tuple(lowered.inputs[0]["shape"]),
                               scale=image["scale"], bias=image["bias"], color_layout=ct.colorlayout.RGB,
                               channel_first=True)]
    start = time.perf_counter()
    with ui.step(f"convert to an ML program ({precision}, coremltools {ct.__version__})"):
        mlmodel = ct.convert(lowered.program, convert_to="mlprogram", minimum_deployment_target=deployment,
                             compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                             compute_units=getattr(ct.ComputeUnit, opts["compute_units"]), inputs=inputs,
                             classifier_config=classifier, skip_model_load=True)
    seconds["convert"] = round(time.perf_counter() - start, 3)
    metadata = _fill_metadata(mlmodel, model, name, target, opts, image, labels)

    package = out_dir / f"{name}.mlpackage"
    compression = None
    with tempfile.TemporaryDirectory() as tmp:
        if opts["weights"]:
            plain = Path(tmp) / "uncompressed.mlpackage"
            mlmodel.save(str(plain))
            before = _dir_bytes(plain)
            start = time.perf_counter()
            with ui.step(f"compress weights ({opts['weights']}, coremltools.optimize.coreml)"):
                mlmodel, how = _compress(mlmodel, opts["weights"])
            seconds["compress"] = round(time.perf_counter() - start, 3)
            _fill_metadata(mlmodel, model, name, target, opts, image, labels)
            compression = {"mode": opts["weights"], "method": how, "package_bytes_before": before}
        mlmodel.save(str(package))
    normalize_mlpackage(package)  # coremltools writes random UUIDs and hash-ordered maps: same model, same bytes
    size = _dir_bytes(package)
    if compression:
        compression["package_bytes_after"] = size
        compression["ratio"] = round(compression["package_bytes_before"] / size, 3)

    # What ships: read the package back and check it against what we are about to report.
    start = time.perf_counter()
    with ui.step("read the package back (MLModel, skip_model_load) and check its spec"):
        reloaded = ct.models.MLModel(str(package), skip_model_load=True)
        spec = _spec_summary(reloaded.get_spec())
        program = load_package(package)
        ops = op_histogram(program)
        if ops != spec["ops"]:
            raise RuntimeError(f"program read back ({ops}) disagrees with the package spec ({spec['ops']})")
    seconds["reload"] = round(time.perf_counter() - start, 3)

    start = time.perf_counter()
    samples = int(opts.get("parity_samples", SAMPLES))
    with ui.step(f"run the saved program with edgevit's MIL evaluator vs onnxruntime ({samples} seeded inputs)"):
        numerics = check_numerics(program, model, lowered, samples=samples, image=image,
                                  classifier=labels is not None)
    seconds["numerics"] = round(time.perf_counter() - start, 3)
    numerics["evaluated"] = (f"{precision} program read back from {package.name}" +
                             (f", {opts['weights']} weights dequantized" if opts["weights"] else ""))
    if not np.isfinite(numerics["max_abs"]):
        raise ParityError(f"the {precision} Core ML program gives non-finite outputs (fp16 overflow?); "
                          "try --precision fp32; nothing written")
    if precision == "fp32" and not opts["weights"] and not Parity(**{k: numerics[k] for k in
                                                                     ("max_abs", "rel", "ref_range", "samples")}).within(TOLERANCE):
        raise ParityError(f"Core ML program differs from onnxruntime: max abs error {numerics['max_abs']:.3g} > "
                          f"{TOLERANCE:g} × output range {numerics['ref_range']:.3g}; nothing written")
    if compression:
        compression["numerics"] = numerics

    neural_engine = ane.report(program, lowered.rewrites, precision)
    if macos.available():  # pragma: no cover - macOS only, never on the Linux suite
        feeds = G.seeded_inputs(model, G.static_input_shapes(model), 0)
        device = macos.measure(package, {i["name"]: v for i, v in zip(lowered.inputs, feeds.values())},
                               opts["compute_units"])
    else:
        device = {"status": macos.NOT_AVAILABLE}

    report = {
        "package": package.name,
        "package_bytes": size,
        "coremltools": ct.__version__,
        "minimum_deployment_target": opts["minimum_deployment_target"],
        "compute_units": opts["compute_units"],
        "precision": precision,
        "target": {"name": target.name, "chips": opts.get("chips", []), "neural_engine": opts.get("neural_engine")},
        "inputs": spec["inputs"],
        "outputs": spec["outputs"],
        "ops": ops,
        "op_count": sum(ops.values()),
        "onnx_ops": lowered.onnx_ops,
        "image_input": image,
        "labels": {"count": len(labels), "file": str(args.labels)} if labels else None,
        "metadata": metadata,
        "numerics": numerics,
        "compression": compression,
        "neural_engine": neural_engine,
        "device": device,
        "seconds": seconds,
    }
    md = _markdown(name, target, report)
    err = numerics["relative_to_range"]
    top1 = numerics["top1_agreement"]
    summary = (f"{package.name} {size / 2**20:.2f} MiB, {precision}"
               + (f", {opts['weights']} weights" if opts["weights"] else "")
               + f", {report['op_count']} ops, max err {err:.2g}×range"
               + (f", top-1 agreement {top1:.0%}" if top1 is not None else "")
               + f" vs onnxruntime; ANE: {neural_engine['expected_on_neural_engine']}/"
               f"{neural_engine['ops_considered']} ops expected")
    return BackendResult(summary=summary, report={"coreml": report}, markdown=md)


def _append_softmax(lowered) -> None:
    """Classifier output: softmax over the logits, so the label dictionary holds probabilities."""
    from coremltools.converters.mil import Builder as mb

    func = lowered.program.functions["main"]
    logits = func.outputs[0]
    with func:
        probs = mb.softmax(x=logits, axis=-1, name=f"{logits.name}_probabilities")
    func.set_outputs([probs])
    lowered.outputs = [{"name": probs.name, "shape": list(probs.shape)}]
    lowered.rewrites.append({"rewrite": "classifier", "node": logits.name,
                             "detail": "softmax appended so the class-label dictionary holds probabilities"})


def _fill_metadata(mlmodel, model: onnx.ModelProto, name: str, target, opts: dict, image, labels) -> dict:
    digest = hashlib.sha256(model.SerializeToString()).hexdigest()
    meta = {
        "author": "edgevit",
        "version": __version__,
        "short_description": f"{name} compiled by edgevit {__version__} for {target.name} "
                             f"({opts['precision']}, {opts['minimum_deployment_target']}+)",
        "license": "as the source model",
        "user_defined": {"edgevit.model": name, "edgevit.target": target.name, "edgevit.precision": opts["precision"],
                         "edgevit.weights": opts["weights"] or "float", "edgevit.onnx_sha256": digest,
                         "edgevit.version": __version__},
    }
    mlmodel.author = meta["author"]
    mlmodel.version = meta["version"]
    mlmodel.short_description = meta["short_description"]
    mlmodel.license = meta["license"]
    for k, v in meta["user_defined"].items():
        mlmodel.user_defined_metadata[k] = v
    spec = mlmodel.get_spec()
    for f in spec.description.input:
        mlmodel.input_description[f.name] = (
            f"RGB image; normalized inside the model with mean {image['mean']} / std {image['std']}" if image
            else "float32 tensor, normalized like the model's training data (NCHW)")
    for f in spec.description.output:
        mlmodel.output_description[f.name] = ("predicted class label" if f.name == "classLabel" else
                                              "class probabilities" if labels else "model output")
    return meta


def _markdown(name: str, target, r: dict) -> str:
    n, ne = r["numerics"], r["neural_engine"]
    lines = [
        f"# edgevit compile: {name} → {target.name} (Core ML, coremltools {r['coremltools']})", "",
        md_table(["package", "size", "precision", "deployment", "compute units", "ops"],
                 [[r["package"], f"{r['package_bytes'] / 2**20:.2f} MiB", r["precision"],
                   r["minimum_deployment_target"] + "+", r["compute_units"], r["op_count"]]]), "",
        "Inputs: " + ", ".join(f"`{i['name']}` {i['type']} {i.get('shape')}" for i in r["inputs"]),
        "Outputs: " + ", ".join(f"`{o['name']}` {o['type']} {o.get('shape', '')}" for o in r["outputs"]), "",
        "## Numerics (Linux: edgevit's numpy MIL evaluator on the saved program vs onnxruntime)", "",
        md_table(["samples", "max abs err", "output range", "err / range", "top-1 agreement"],
                 [[n["samples"], f"{n['max_abs']:.3g}", f"{n['ref_range']:.3g}", f"{n['relative_to_range']:.3g}",
                   "-" if n["top1_agreement"] is None else f"{n['top1_agreement']:.0%}"]]),
    ]
    if r["compression"]:
        c = r["compression"]
        lines += ["", f"Weights: {c['method']}: package {c['package_bytes_before'] / 2**20:.2f} MiB → "
                      f"{c['package_bytes_after'] / 2**20:.2f} MiB ({c['ratio']}×)."]
    lines += ["", "## Neural Engine (expected, not measured)", "", ne["verdict"] + ".", ""]
    if ne["fallback_types"]:
        lines += ["Likely fallbacks: " + ", ".join(f"{t} ×{k}" for t, k in ne["fallback_types"].items()) +
                  " (rules: " + ", ".join(f"{k} ×{v}" for k, v in ne["fallback_by_rule"].items()) + ")", ""]
    if ne["rewrites_applied"]:
        lines += ["Rewrites applied for the ANE: " + ", ".join(f"{k} ×{v}" for k, v in ne["rewrites_applied"].items()), ""]
    if ne["warnings_by_rule"]:
        lines += ["Advice: " + ", ".join(f"{k} ×{v}" for k, v in ne["warnings_by_rule"].items()), ""]
    lines += ["Rules and sources: " + "; ".join(f"{x['id']} ({x['kind']}: {x['source']})" for x in ne["rules"]), "",
              f"Device run: {r['device']['status']}"]
    return "\n".join(lines)
