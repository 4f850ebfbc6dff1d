"""merge-classifier-heads: averaged class + distillation heads → one Gemm; other mixes are left alone."""

from __future__ import annotations

import numpy as np
import pytest

from edgevit.frontend.export import export
from edgevit.frontend.source import resolve
from edgevit.passes.merge_classifier_heads import PASS

from .helpers import apply_pass, model_from_text, random_weight


def _floats(name: str, a: np.ndarray) -> str:
    dims = f"[{','.join(map(str, a.shape))}]" if a.ndim else ""
    return f"float{dims} {name} = {{{', '.join(repr(float(v)) for v in a.ravel())}}}"


def _heads(body: str, inputs="float[2,6] x", inits: dict | None = None):
    weights = dict(w1=random_weight((5, 6), 1), b1=random_weight((5,), 2), w2=random_weight((5, 6), 3),
                   b2=random_weight((5,), 4), **(inits or {}))
    return model_from_text(f"""<ir_version: 8, opset_import: ["": 17]>
heads ({inputs}) => (float[2,5] y) <{", ".join(_floats(n, a) for n, a in weights.items())}> {{
    {body}
}}""")


SHARED = "h1 = Gemm <transB = 1> (x, w1, b1)\n    h2 = Gemm <transB = 1> (x, w2, b2)\n    s = Add(h1, h2)\n"
BN = dict(s1=random_weight((6,), 5) + 1, t1=random_weight((6,), 6), m1=random_weight((6,), 7),
          v1=np.abs(random_weight((6,), 8)) + 0.5, s2=random_weight((6,), 9) + 1, t2=random_weight((6,), 10),
          m2=random_weight((6,), 11), v2=np.abs(random_weight((6,), 12)) + 0.5)


@pytest.mark.parametrize("case, body, inputs, inits, ops", [
    ("same input, Div 2", SHARED + "    y = Div(s, two)", "float[2,6] x", dict(two=np.float32(2)), ["Gemm"]),
    ("same input, Mul ½ first", SHARED + "    y = Mul(half, s)", "float[2,6] x", dict(half=np.float32(0.5)), ["Gemm"]),
    ("BatchNorm per head (LeViT)", """n1 = BatchNormalization(x, s1, t1, m1, v1)
    n2 = BatchNormalization(x, s2, t2, m2, v2)
    h1 = Gemm <transB = 1> (n1, w1, b1)
    h2 = Gemm <transB = 1> (n2, w2, b2)
    s = Add(h1, h2)
    y = Div(s, two)""", "float[2,6] x", dict(two=np.float32(2), **BN), ["Gemm"]),
    ("two tokens (DeiT-distilled), transB=0, alpha", """h1 = Gemm <transB = 1> (x1, w1, b1)
    h2 = Gemm <alpha = 0.5> (x2, w2t, b2)
    s = Add(h1, h2)
    y = Div(s, two)""", "float[2,6] x1, float[2,6] x2",
     dict(two=np.float32(2), w2t=random_weight((6, 5), 13)), ["Concat", "Gemm"]),
])
def test_merges_averaged_heads(case, body, inputs, inits, ops):
    out = apply_pass(PASS, _heads(body, inputs, {k: np.asarray(v, np.float32) for k, v in inits.items()}))
    assert out.matches == 1 and out.ops() == ops
    assert out.parity.max_abs < 1e-5


@pytest.mark.parametrize("case, body, inputs, inits", [
    ("weighted, not averaged", SHARED + "    y = Mul(s, c)", "float[2,6] x", dict(c=np.float32(0.3))),
    ("0.7·h1 + 0.3·h2", """h1 = Gemm <transB = 1> (x, w1, b1)
    h2 = Gemm <transB = 1> (x, w2, b2)
    a = Mul(h1, c7)
    b = Mul(h2, c3)
    y = Add(a, b)""", "float[2,6] x", dict(c7=np.float32(0.7), c3=np.float32(0.3))),
    ("runtime weight", """h1 = Gemm <transB = 1> (x, w, b1)
    h2 = Gemm <transB = 1> (x, w2, b2)
    s = Add(h1, h2)
    y = Div(s, two)""", "float[2,6] x, float[5,6] w", dict(two=np.float32(2))),
])
def test_refuses_other_mixes(case, body, inputs, inits):
    out = apply_pass(PASS, _heads(body, inputs, {k: np.asarray(v, np.float32) for k, v in inits.items()}))
    assert out.matches == 0 and out.count("Gemm") == 2


@pytest.mark.parametrize("name, size", [
    ("efficientformer_l1", 224),  # same pooled features into both heads
    ("levit_128s", 128),  # a BatchNorm in front of each head
    ("deit_tiny_distilled_patch16_224", 64),  # class token and distillation token
])
def test_zoo_heads_merged(name, size):
    model = export(resolve(name), (size, size), samples=1).model
    out = apply_pass(PASS, model, samples=1)
    assert out.matches == 1 and out.count("Gemm") == 1
    assert out.parity.within(1e-4), out.parity
