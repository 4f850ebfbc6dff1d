"""Vision transformers sized for a microcontroller (STM32F746: 320 KB SRAM, 1 MB flash).

Budget: ≤ ~700 K parameters (int8 weights in flash with room for code) and a peak of a few tens of KB
of int8 activations at 32×32 / 64×64 input. Ops are limited to what `edgevit.quant` gives integer
semantics: Conv (+BN, folded by the pass pipeline), depthwise Conv, Linear, MatMul, Softmax,
LayerNorm, GELU/ReLU/Hardswish, Add, pooling, reshape/transpose, split/concat.

- mcu_deit:   DeiT / MCUFormer-like plain ViT: 4×4 patch embed, 64 tokens × 96 dims, 3 heads, mean pool.
- mcu_former: EfficientFormer-like hybrid: conv stem, depthwise-conv MetaFormer blocks, then global
              multi-head attention over the 8×8 tokens of the last stage.
- mcu_shvit:  SHViT-like: BN conv stages, single-head attention on a channel slice (split/concat),
              attention in channels-first layout (v @ attnᵀ).
"""

from __future__ import annotations

import torch
from torch import nn

from . import ProjectModel


class Attention(nn.Module):
    """Multi-head softmax self-attention over tokens (B, N, C)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: LN → attention → add, LN → MLP(GELU) → add."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MCUDeiT(nn.Module):
    def __init__(self, input_size=(32, 32), patch=4, dim=96, depth=4, heads=3, num_classes=10):
        super().__init__()
        tokens = (input_size[0] // patch) * (input_size[1] // patch)
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class ConvBlock(nn.Module):
    """EfficientFormer's 4-D MetaFormer block with a depthwise 3×3 token mixer and a 1×1-conv MLP."""

    def __init__(self, dim: int, ratio: int = 2):
        super().__init__()
        self.mixer = _conv_bn(dim, dim, 3, groups=dim)
        self.mlp = nn.Sequential(_conv_bn(dim, dim * ratio, 1), nn.GELU(), _conv_bn(dim * ratio, dim, 1))

    def forward(self, x):
        x = x + self.mixer(x)
        return x + self.mlp(x)


class MCUFormer(nn.Module):
    def __init__(self, input_size=(64, 64), dims=(24, 48, 96), depths=(1, 2), heads=4, attn_blocks=2,
                 num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, dims[0] // 2, 3, 2), nn.ReLU(), _conv_bn(dims[0] // 2, dims[0], 3, 2),
                                  nn.ReLU())
        stages = []
        for i, depth in enumerate(depths):
            stages += [ConvBlock(dims[i]) for _ in range(depth)]
            stages.append(_conv_bn(dims[i], dims[i + 1], 3, 2))
        self.stages = nn.Sequential(*stages)
        self.blocks = nn.Sequential(*[Block(dims[-1], heads) for _ in range(attn_blocks)])
        self.norm, self.head = nn.LayerNorm(dims[-1]), nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x)).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


class SingleHeadMixer(nn.Module):
    """SHViT's single-head attention on the first `part` channels; the rest pass through untouched."""

    def __init__(self, dim: int, part: int, qk: int = 16):
        super().__init__()
        self.part, self.qk, self.scale = part, qk, qk ** -0.5
        self.qkv = _conv_bn(part, 2 * qk + part, 1)
        self.proj = nn.Sequential(nn.ReLU(), _conv_bn(dim, dim, 1))

    def forward(self, x):
        b, c, h, w = x.shape
        x1, x2 = torch.split(x, [self.part, c - self.part], dim=1)
        q, k, v = self.qkv(x1).flatten(2).split([self.qk, self.qk, self.part], dim=1)
        attn = ((q.transpose(-2, -1) @ k) * self.scale).softmax(dim=-1)
        x1 = (v @ attn.transpose(-2, -1)).reshape(b, self.part, h, w)
        return self.proj(torch.cat([x1, x2], dim=1))


class SHBlock(nn.Module):
    def __init__(self, dim: int, attention: bool):
        super().__init__()
        self.conv = _conv_bn(dim, dim, 3, groups=dim)
        self.mixer = SingleHeadMixer(dim, dim // 4) if attention else None
        self.ffn = nn.Sequential(_conv_bn(dim, dim * 2, 1), nn.ReLU(), _conv_bn(dim * 2, dim, 1))

    def forward(self, x):
        x = x + self.conv(x)
        if self.mixer is not None:
            x = x + self.mixer(x)
        return x + self.ffn(x)


class MCUSHViT(nn.Module):
    def __init__(self, input_size=(64, 64), dims=(32, 64, 128), num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 16, 3, 2), nn.ReLU(), _conv_bn(16, dims[0], 3, 2), nn.ReLU())
        layers = []
        for i, dim in enumerate(dims):
            if i:
                layers += [_conv_bn(dims[i - 1], dim, 3, 2), nn.ReLU()]
            layers += [SHBlock(dim, attention=i > 0), SHBlock(dim, attention=i > 0)]
        self.layers = nn.Sequential(*layers)
        self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        return self.head(self.pool(self.layers(self.stem(x))).flatten(1))


MODELS = [
    ProjectModel("mcu_deit", "mcu", "DeiT (Touvron et al., ICML 2021) sized as in MCUFormer (Liang et al., "
                 "NeurIPS 2023)", (32, 32), lambda input_size=(32, 32): MCUDeiT(input_size)),
    ProjectModel("mcu_former", "mcu", "EfficientFormer (Li et al., NeurIPS 2022), shrunk for MCUs", (64, 64),
                 lambda input_size=(64, 64): MCUFormer(input_size)),
    ProjectModel("mcu_shvit", "mcu", "SHViT (Yun & Ro, CVPR 2024), shrunk for MCUs", (64, 64),
                 lambda input_size=(64, 64): MCUSHViT(input_size)),
]
