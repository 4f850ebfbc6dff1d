"""The model zoo: names from the efficient-ViT literature → torch modules.

timm provides the architectures (weights are randomly initialised: there is no hub access here). Input
size defaults come from timm's pretrained config; params and MACs are *computed* by running the model
once under torch's FlopCounterMode, and cached (keyed by model, input size and library versions).
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgevitError

# family → (paper, timm model names). Keep families in the order a reader meets them in the literature.
_TIMM_FAMILIES: dict[str, tuple[str, list[str]]] = {
    "efficientformer": ("EfficientFormer (Li et al., NeurIPS 2022)",
                        ["efficientformer_l1", "efficientformer_l3", "efficientformer_l7"]),
    "efficientformerv2": ("EfficientFormerV2 (Li et al., ICCV 2023)",
                          ["efficientformerv2_s0", "efficientformerv2_s1", "efficientformerv2_s2",
                           "efficientformerv2_l"]),
    "shvit": ("SHViT: single-head vision transformer (Yun & Ro, CVPR 2024)",
              ["shvit_s1", "shvit_s2", "shvit_s3", "shvit_s4"]),
    "nextvit": ("Next-ViT (Li et al., 2022)", ["nextvit_small", "nextvit_base"]),
    "lowformer": ("LowFormer (Nottebaum et al., WACV 2025)", ["lowformer_b0", "lowformer_b1", "lowformer_b15"]),
    "fastvit": ("FastViT (Vasu et al., ICCV 2023)",
                ["fastvit_t8", "fastvit_t12", "fastvit_s12", "fastvit_sa12", "fastvit_mci0"]),
    "mobileone": ("MobileOne (Vasu et al., CVPR 2023)", ["mobileone_s0", "mobileone_s1", "mobileone_s2"]),
    "repvit": ("RepViT (Wang et al., CVPR 2024)", ["repvit_m0_9", "repvit_m1_0", "repvit_m1_1", "repvit_m1_5"]),
    "levit": ("LeViT (Graham et al., ICCV 2021)", ["levit_128s", "levit_128", "levit_192", "levit_256"]),
    "edgenext": ("EdgeNeXt (Maaz et al., ECCVW 2022)",
                 ["edgenext_xx_small", "edgenext_x_small", "edgenext_small"]),
    "poolformer": ("PoolFormer / MetaFormer (Yu et al., CVPR 2022)",
                   ["poolformer_s12", "poolformer_s24", "poolformerv2_s12"]),
    "tinyvit": ("TinyViT (Wu et al., ECCV 2022)", ["tiny_vit_5m_224", "tiny_vit_11m_224"]),
    "swin": ("Swin Transformer (Liu et al., ICCV 2021)", ["swin_tiny_patch4_window7_224"]),
    "pvtv2": ("PVTv2 (Wang et al., CVMJ 2022)", ["pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2"]),
    "mobilevit": ("MobileViT v1/v2 (Mehta & Rastegari, ICLR 2022 / 2023)",
                  ["mobilevit_xxs", "mobilevit_xs", "mobilevit_s", "mobilevitv2_050"]),
    "deit": ("DeiT (Touvron et al., ICML 2021)",
             ["deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "deit_small_patch16_224"]),
    "efficientvit-mit": ("EfficientViT, multi-scale linear attention (Cai et al., ICCV 2023)",
                         ["efficientvit_b0", "efficientvit_b1"]),
    "efficientvit-msra": ("EfficientViT, cascaded group attention (Liu et al., CVPR 2023)",
                          ["efficientvit_m0", "efficientvit_m1", "efficientvit_m2"]),
    "starnet": ("StarNet (Ma et al., CVPR 2024)", ["starnet_s050", "starnet_s1"]),
}


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str
    paper: str
    source: str  # "timm" or "edgevit" (defined in edgevit/models/)
    input_size: tuple[int, int]  # default (H, W)


def _build_entries() -> dict[str, ZooEntry]:
    import timm

    entries = {}
    for family, (paper, names) in _TIMM_FAMILIES.items():
        for name in names:
            cfg = timm.models.get_pretrained_cfg(name)
            hw = tuple(cfg.input_size[1:]) if cfg is not None else (224, 224)
            entries[name] = ZooEntry(name, family, paper, "timm", hw)
    from .models import project_models

    for m in project_models().values():
        entries[m.name] = ZooEntry(m.name, m.family, m.paper, "edgevit", tuple(m.input_size))
    return entries


_ENTRIES: dict[str, ZooEntry] | None = None


def entries() -> dict[str, ZooEntry]:
    global _ENTRIES
    if _ENTRIES is None:
        _ENTRIES = _build_entries()
    return _ENTRIES


def families() -> list[str]:
    return sorted({e.family for e in entries().values()})


def lookup(name: str) -> ZooEntry:
    """The zoo entry for `name`, or a one-line error naming the closest zoo names."""
    zoo = entries()
    if name in zoo:
        return zoo[name]
    close = difflib.get_close_matches(name, list(zoo), n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else "; run `edgevit models` for the list"
    raise EdgevitError(f"unknown model '{name}'{hint}")


def create(name: str, input_size: tuple[int, int] | None = None):
    """A randomly initialised, eval-mode torch module for zoo model `name` at `input_size`."""
    import timm
    import torch

    entry = lookup(name)
    hw = tuple(input_size) if input_size else entry.input_size
    torch.manual_seed(0)  # same random weights every time, so reports are reproducible
    model = None
    if entry.source == "edgevit":
        from .models import project_models

        model = project_models()[name].factory(input_size=hw)
    elif hw != entry.input_size:
        # Models with resolution-bound parameters (positional embeddings, attention biases, windows)
        # take the size at construction time; the others ignore it or reject the keyword.
        try:
            model = timm.create_model(name, pretrained=False, img_size=hw)
        except TypeError:
            model = None
    if model is None:
        model = timm.create_model(name, pretrained=False)
    try:
        return make_nondegenerate(model, hw)
    except RuntimeError as exc:  # shape errors: resolution-bound parameters that img_size cannot change
        first = str(exc).strip().splitlines()[0]
        raise EdgevitError(f"{name} does not run at input size {hw[0]}x{hw[1]} "
                           f"(default {entry.input_size[0]}x{entry.input_size[1]}): {first}") from None


def make_nondegenerate(model, input_size: tuple[int, int]):
    """Re-draw the parameters that a fresh init leaves constant, so numerical checks mean something.

    Without pretrained weights every BatchNorm is the identity (mean 0, var 1, γ 1, β 0), layer scales
    are 1e-5 and attention biases are zero: a BN-folding bug or a dropped attention bias would then be
    invisible in a parity check, and logits shrink to ~1e-5. We give those tensors seeded, plausible
    values (deterministic), then recalibrate BatchNorm statistics on a seeded random batch, as after
    training, so activations stay O(1) even in un-normalised multi-branch nets (MobileOne, RepVGG).
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, param in model.named_parameters():
            flat = param.detach().reshape(-1)
            if flat.numel() < 2 or not bool(torch.all(flat == flat[0])):
                continue
            if float(flat[0]) == 0.0:  # biases, zero-init attention biases / heads
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
            else:  # norm weights (1.0) and layer scales (1e-5 … 1e-6)
                param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
        norms = [m for m in model.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if norms:
            saved = [m.momentum for m in norms]
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batch
            model.train()
            model(torch.randn(4, 3, *input_size, generator=gen))
            for m, momentum in zip(norms, saved):
                m.momentum = momentum
    return model.eval()


def _cache_dir() -> Path:
    root = os.environ.get("EDGEVIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgevit")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def count_params_macs(model, input_size: tuple[int, int], batch: int = 1) -> tuple[int, int, int]:
    """Parameters, MACs of one forward pass (FlopCounterMode counts 2 flops per MAC), and int8 weight bytes.

    int8 bytes: weight tensors (rank ≥ 2) at 1 byte per value, vectors (biases, norm and scale params) at
    4 bytes as int32 — before BatchNorm folding, so an upper bound on what the MCU backend stores.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    int8_bytes = sum(p.numel() * (1 if p.dim() >= 2 else 4) for p in model.parameters())
    x = torch.randn(batch, 3, *input_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return params, counter.get_total_flops() // 2, int8_bytes


def stats(name: str, input_size: tuple[int, int] | None = None) -> dict:
    """Computed params/MACs for a zoo model, cached on disk per (model, size, library versions)."""
    import timm
    import torch

    entry = lookup(name)
    hw = tuple(input_size) if input_size else entry.input_size
    key = f"v2|{name}@{hw[0]}x{hw[1]}|timm{timm.__version__}|torch{torch.__version__}"
    cache_file = _cache_dir() / "zoo_stats.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        params, macs, int8_bytes = count_params_macs(create(name, hw), hw)
        cache[key] = {"params": params, "macs": macs, "int8_weight_bytes": int8_bytes}
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        os.replace(tmp, cache_file)
    return {"name": name, "family": entry.family, "input_size": list(hw), **cache[key]}
