"""What a pass is. One module per rewrite in edgevit/passes/, each exporting `PASS`.

A pass rewrites an `onnx_ir.Model` in place and returns how many places it changed. Passes built from
onnxscript's rewriter hand their `RewriteRuleSet` to `rule_pass`; passes that need a whole-graph view
(e.g. n-ary branch sums) implement `run` directly. A pass must leave the graph untouched where a
precondition fails — the pipeline checks numerics after each one, but silence is not proof.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx_ir as ir


@dataclass(frozen=True)
class Pass:
    name: str  # command-line name, e.g. "fold-batchnorm"
    summary: str  # one line for `edgevit optimize --list`
    run: Callable[[ir.Model], int]  # rewrite in place, return number of matches


def rule_pass(name: str, summary: str, rules) -> Pass:
    """A Pass from an onnxscript `RewriteRuleSet` (or a list of rules), applied until nothing matches."""
    from onnxscript.rewriter import RewriteRuleSet

    ruleset = rules if isinstance(rules, RewriteRuleSet) else RewriteRuleSet(list(rules))

    def run(model: ir.Model) -> int:
        total = 0
        for _ in range(32):  # rewrites can expose new matches; stop at a fixed point
            count = ruleset.apply_to_model(model)
            if not count:
                break
            total += count
        return total

    return Pass(name, summary, run)
