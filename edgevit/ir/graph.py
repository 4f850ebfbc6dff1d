"""Loading, validating and shaping ONNX graphs — the one place that knows the in-memory graph type.

Everything user-supplied goes through `load_onnx`, which turns every way a file can be wrong into a
one-line `EdgevitError` instead of a protobuf or checker traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import EdgevitError

ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.BOOL: np.bool_,
}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_onnx(path: str | Path, check: bool = True) -> onnx.ModelProto:
    """Load and validate an ONNX file; every failure is a one-line EdgevitError."""
    path = Path(path)
    if not path.exists():
        raise EdgevitError(f"{path}: no such file")
    if path.is_dir():
        raise EdgevitError(f"{path}: is a directory, expected an .onnx file")
    data = path.read_bytes()
    if not data:
        raise EdgevitError(f"{path}: file is empty, not an ONNX model")
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends
        raise EdgevitError(
            f"{path}: not a valid ONNX file (protobuf parse failed: {_first_line(exc)}); truncated or not ONNX?"
        ) from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise EdgevitError(f"{path}: not an ONNX model (no graph nodes found); truncated or not ONNX?")
    _load_external_data(model, path)
    _check_tensors(model, path)
    if check:
        try:
            onnx.checker.check_model(model, full_check=False)
        except Exception as exc:
            raise EdgevitError(f"{path}: invalid ONNX model: {_first_line(exc)}") from None
    return model


# Tensors a user's file may declare: beyond these an element count is refused before anything allocates.
MAX_TENSOR_ELEMENTS = 1 << 31


def _all_tensors(model: onnx.ModelProto) -> list[tuple[onnx.TensorProto, str]]:
    """(tensor, where) for initializers and tensor-valued attributes, in the graph and in function bodies."""
    from onnx import external_data_helper

    found = [(t, "tensor") for t in external_data_helper._get_all_tensors(model)]
    found += [(t, "sparse initializer") for s in model.graph.sparse_initializer for t in (s.values, s.indices)]
    return found


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Read external-data tensors, which must live in regular files inside the model's own folder."""
    from onnx import external_data_helper

    tensors = [t for t, _ in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not tensors:
        return
    base = path.resolve().parent
    for t in tensors:
        entries = {e.key: e.value for e in t.external_data}
        location = entries.get("location", "")
        if not location or "\x00" in location:
            raise EdgevitError(f"{path}: tensor '{t.name}' uses external data without a file location")
        where = Path(location)
        resolved = (base / where).resolve()
        if where.is_absolute() or ".." in where.parts or not resolved.is_relative_to(base):
            raise EdgevitError(f"{path}: tensor '{t.name}' has external data at '{location}', outside the model's "
                               f"folder {base}; refusing to read it (external data must sit beside the model)")
        if not resolved.is_file():
            raise EdgevitError(f"{path}: tensor '{t.name}': external data file '{location}' not found beside the model")
        try:
            offset, length = int(entries.get("offset", 0)), entries.get("length")
            length = None if length is None else int(length)
        except ValueError:
            raise EdgevitError(f"{path}: tensor '{t.name}': external data offset/length are not integers") from None
        size = resolved.stat().st_size
        if offset < 0 or (length is not None and length < 0) or offset + (length or 0) > size:
            raise EdgevitError(f"{path}: tensor '{t.name}': external data range offset={offset} length={length} "
                               f"lies outside '{location}' ({size} bytes)")
    try:
        external_data_helper.load_external_data_for_model(model, str(base))
    except Exception as exc:
        raise EdgevitError(f"{path}: cannot read external data: {_first_line(exc)}") from None


def _check_tensors(model: onnx.ModelProto, path: Path) -> None:
    """Every stored tensor has sane dims and exactly the data its dims and type call for.

    A mismatch would otherwise surface much later as a numpy reshape error (or a huge allocation).
    """
    known = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type not in known:
            raise EdgevitError(f"{path}: tensor '{vi.name}' has an undefined element type "
                               f"({vi.type.tensor_type.elem_type})")
    for t, where in _all_tensors(model):
        dims = list(t.dims)
        label = f"{path}: {where} '{t.name}'"
        if any(d < 0 for d in dims):
            raise EdgevitError(f"{label} has negative dims {dims}")
        numel = int(np.prod(dims, dtype=object)) if dims else 1
        if numel > MAX_TENSOR_ELEMENTS:
            raise EdgevitError(f"{label} declares {numel} elements (dims {dims}), over the limit of "
                               f"{MAX_TENSOR_ELEMENTS}; refusing it")
        if t.data_type == onnx.TensorProto.UNDEFINED or t.data_type not in onnx.TensorProto.DataType.values():
            raise EdgevitError(f"{label} has an undefined element type ({t.data_type})")
        if t.data_type in (onnx.TensorProto.STRING,):
            continue  # variable-size elements; the checker and the backends deal with strings
        if t.HasField("raw_data") or t.raw_data:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            packed = t.data_type in _SUB_BYTE_TYPES
            expected = (numel + 1) // 2 if packed else numel * itemsize
            if len(t.raw_data) != expected:
                raise EdgevitError(f"{label}: dims {dims} need {expected} bytes of "
                                   f"{onnx.TensorProto.DataType.Name(t.data_type)} data, the file holds "
                                   f"{len(t.raw_data)}")
        else:
            field = onnx.helper.tensor_dtype_to_field(t.data_type)
            count = len(getattr(t, field))
            if t.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
                count //= 2
            if count != numel and not (count == 0 and numel == 0):
                raise EdgevitError(f"{label}: dims {dims} need {numel} values, the file holds {count}")


_SUB_BYTE_TYPES = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, n)}


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: graph inputs that are not initializers (old exporters list weights as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def value_shape(vi: onnx.ValueInfoProto) -> list[int | str | None]:
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(d.dim_value)
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def value_dtype(vi: onnx.ValueInfoProto) -> np.dtype:
    elem = vi.type.tensor_type.elem_type
    if elem not in ONNX_TO_NUMPY:
        raise EdgevitError(f"input '{vi.name}' has unsupported element type {onnx.TensorProto.DataType.Name(elem)}")
    return np.dtype(ONNX_TO_NUMPY[elem])


def is_static(model: onnx.ModelProto) -> bool:
    return all(isinstance(d, int) and d > 0 for vi in graph_inputs(model) for d in value_shape(vi))


def static_input_shapes(
    model: onnx.ModelProto, batch: int | None = None, input_size: tuple[int, int] | None = None
) -> dict[str, list[int]]:
    """Concrete shapes for every graph input: dynamic dims filled from --batch / --input-size.

    An image-like input (rank 4) takes batch at dim 0 and H, W at dims 2, 3. Other dynamic dims cannot
    be guessed, so they are an error naming the input.
    """
    shapes = {}
    for vi in graph_inputs(model):
        dims = value_shape(vi)
        fixed = []
        for axis, d in enumerate(dims):
            if axis == 0 and batch is not None:
                d = batch
            elif len(dims) == 4 and axis in (2, 3) and input_size is not None:
                d = input_size[axis - 2]
            if isinstance(d, int) and d < 0:
                raise EdgevitError(f"input '{vi.name}' has a negative dim {axis} ({dims}); inputs need positive dims")
            if not isinstance(d, int) or d <= 0:
                if axis == 0:
                    d = 1  # a symbolic batch dimension defaults to 1
                else:
                    raise EdgevitError(
                        f"input '{vi.name}' has dynamic dim {axis} ({d!r}); give --input-size H W to make it static"
                    )
            fixed.append(int(d))
        shapes[vi.name] = fixed
    return shapes


def seeded_inputs(model: onnx.ModelProto, shapes: dict[str, list[int]], seed: int) -> dict[str, np.ndarray]:
    """Deterministic inputs for parity checks: standard normal for floats (like normalised images)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in graph_inputs(model):
        dtype = value_dtype(vi)
        shape = shapes[vi.name]
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feeds[vi.name] = rng.integers(0, 8, shape).astype(dtype)
    return feeds


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """ONNX shape inference with constant propagation; errors become one line."""
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise EdgevitError(f"shape inference failed: {_first_line(exc)}") from None


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def node_attributes(node: onnx.NodeProto) -> dict:
    """A node's attributes as Python values: strings decoded, tensors as numpy arrays, repeated as lists."""
    out = {}
    for a in node.attribute:
        value = onnx.helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        out[a.name] = list(value) if isinstance(value, (list, tuple)) else value
    return out
