"""Where a backbone is cut for per-episode fine-tuning (`--tune`).

Per-episode fine-tuning only changes the top of the network, so everything below the cut is
frozen: it runs once per image and augmented view (the feature bank), and each training
step only runs the part above the cut. That is what makes hundreds of fine-tuned episodes
affordable on a CPU. Tune modes, from cheapest to dearest:

- ``head``: nothing in the backbone trains; only the N-way head does.
- ``norm``: the affine parameters (scale and shift) of the backbone's final normalisation
  layer, i.e. a FiLM layer on the last feature map, plus the head.
- ``last``: the last stage (block) and everything after it, plus the head.
- ``full``: the whole backbone, plus the head (the bank then holds augmented images).

BatchNorm statistics stay frozen in every mode (the modules run in eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import BenchError
from .fused import gather_affine_clamp_pool


@dataclass
class BackboneSplit:
    """`lower` maps images to bank features; `upper` maps bank features to pooled
    embeddings [B, D]; `trainable` names the parameters of `upper` trained per episode."""

    lower: nn.Module
    upper: nn.Module
    trainable: list[str]
    tune: str


class FrozenNorm(nn.Module):
    """The statistics half of an eval-mode BatchNorm, (x - running_mean) / sqrt(var + eps),
    returning channels-last positions [N, H*W, C].

    Running it in the frozen lower part leaves only a per-channel affine for the upper part,
    which batches over episodes as plain broadcasting (vmapping a BatchNorm with
    per-episode weights instead copies the feature map several times per step). Channels
    last keeps that broadcast on the contiguous dimension, which vectorises."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.register_buffer("shift", bn.running_mean.detach().clone())
        self.register_buffer("inv_std", (bn.running_var.detach() + bn.eps).rsqrt())

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)  # [N, H*W, C]
        return ((x - self.shift) * self.inv_std).contiguous()


class _AffineClampPool(torch.autograd.Function):
    """mean_p clamp(x * w + b, lo, hi) for many episodes at once, in few memory passes.

    x [G, B, P, C] (bank features, no gradient), w, b [G, C] -> [G, B, C]. On a CPU this op
    is memory-bound: the hand-written backward recomputes the pre-activation instead of
    keeping autograd's three full-size intermediates alive.
    """

    @staticmethod
    def forward(ctx, x, w, b, lo: float, hi: float):
        pre = torch.addcmul(b[:, None, None, :], x, w[:, None, None, :])
        out = pre.clamp_(lo, hi).mean(-2)
        ctx.save_for_backward(x, w, b)
        ctx.bounds = (lo, hi)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, w, b = ctx.saved_tensors
        lo, hi = ctx.bounds
        pre = torch.addcmul(b[:, None, None, :], x, w[:, None, None, :])
        g = torch.ops.aten.hardtanh_backward(  # one pass: grad where lo < pre < hi, else 0
            (grad / x.shape[-2]).unsqueeze(-2).expand_as(pre), pre, lo, hi)
        grad_b = g.sum((1, 2))
        grad_w = g.mul_(x).sum((1, 2))
        return None, grad_w, grad_b, None, None


class AffineAct(nn.Module):
    """The affine half of a BatchNorm, its activation, and average pooling over positions:
    [..., P, C] -> [..., C]."""

    def __init__(self, bn: nn.Module):
        super().__init__()
        self.weight = nn.Parameter(bn.weight.detach().clone())
        self.bias = nn.Parameter(bn.bias.detach().clone())
        self.act = bn.act if hasattr(bn, "act") else nn.Identity()

    def forward(self, x):
        return self.act(x * self.weight + self.bias).mean(-2)

    def _bounds(self) -> tuple[float, float] | None:
        if isinstance(self.act, nn.ReLU6) or (isinstance(self.act, nn.Hardtanh)
                                              and (self.act.min_val, self.act.max_val) == (0.0, 6.0)):
            return 0.0, 6.0
        if isinstance(self.act, nn.ReLU):
            return 0.0, float("inf")
        return None

    def forward_episodes(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """Many episodes at once: params [G, C] each, x [G, B, P, C] -> [G, B, C]."""
        w, b = params["weight"][:, None, None, :], params["bias"][:, None, None, :]
        bounds = self._bounds()
        if bounds is None or x.requires_grad:
            return self.act(x * w + b).mean(-2)
        return _AffineClampPool.apply(x, params["weight"], params["bias"], *bounds)

    def forward_rows(self, params: dict, flat_bank: torch.Tensor,
                     rows: torch.Tensor) -> torch.Tensor | None:
        """`forward_episodes(params, flat_bank[rows])` as one compiled kernel (fused.py):
        rows [G, B] index flat_bank [M, P, C]. None where there is none (an activation
        other than ReLU6/ReLU) or compiling failed: the caller gathers and runs eagerly."""
        bounds = self._bounds()
        if bounds is None:
            return None
        return gather_affine_clamp_pool(flat_bank, rows, params["weight"], params["bias"],
                                        *bounds)


def _efficientnet(model: nn.Module, tune: str) -> BackboneSplit:
    # timm EfficientNet / MobileNetV2 / MobileNetV3 layout:
    # conv_stem, bn1, blocks[...], conv_head, bn2, global_pool (flattening).
    stem = [model.conv_stem, model.bn1]
    blocks = list(model.blocks)
    neck = [model.conv_head, model.bn2]
    pool = model.global_pool
    if tune == "norm":
        lower = nn.Sequential(*stem, *blocks, neck[0], FrozenNorm(neck[1]))
        upper = AffineAct(neck[1])
        trainable = ["weight", "bias"]
    elif tune == "last":
        lower = nn.Sequential(*stem, *blocks[:-1])
        upper = nn.Sequential(blocks[-1], *neck, pool)
        trainable = [n for n, _ in upper.named_parameters()]
    else:
        raise _unsupported(model, tune)
    return BackboneSplit(lower, upper, trainable, tune)


def _resnet(model: nn.Module, tune: str) -> BackboneSplit:
    if tune != "last":
        raise _unsupported(model, tune)
    lower = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool,
                          model.layer1, model.layer2, model.layer3)
    upper = nn.Sequential(model.layer4, model.global_pool)
    return BackboneSplit(lower, upper, [n for n, _ in upper.named_parameters()], tune)


class _VitUpper(nn.Module):
    """Final transformer block(s), final norm and token pooling of a timm ViT."""

    def __init__(self, model: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.norm = model.norm
        # MAP ViTs pool with an attention head: a submodule here, so its parameters are the
        # upper part's own (trained in `last`, frozen in `norm`) and not the model's
        # parameters reached through `_vit`, which no episode would own
        self.attn_pool = getattr(model, "attn_pool", None)
        self.fc_norm = model.fc_norm  # the norm after pooling, in avg-pool ViTs
        self._vit = [model]  # not a submodule: only used for its pooling rule (`pool` runs
        # model.attn_pool, the same module as self.attn_pool)

    def forward(self, x):
        x = self._vit[0].pool(self.norm(self.blocks(x)))
        return self.fc_norm(x)


class _VitLower(nn.Module):
    def __init__(self, model: nn.Module, n_upper_blocks: int):
        super().__init__()
        self.model = model
        self.n = len(model.blocks) - n_upper_blocks

    def forward(self, x):
        m = self.model
        x = m.patch_embed(x)
        x = m._pos_embed(x)
        x = m.patch_drop(x)
        x = m.norm_pre(x)
        for blk in list(m.blocks)[: self.n]:
            x = blk(x)
        return x


def _vit(model: nn.Module, tune: str) -> BackboneSplit:
    k = {"norm": 0, "last": 1}[tune]
    lower = _VitLower(model, k)
    upper = _VitUpper(model, list(model.blocks)[len(model.blocks) - k:])
    if tune == "norm":
        trainable = [n for n, _ in upper.named_parameters()
                     if n.startswith(("norm.", "fc_norm."))]
    else:
        trainable = [n for n, _ in upper.named_parameters()]
    return BackboneSplit(lower, upper, trainable, tune)


def _unsupported(model: nn.Module, tune: str) -> BenchError:
    return BenchError(
        f"--tune {tune} is not available for {type(model).__name__} backbones "
        f"({getattr(model, 'default_cfg', {}).get('architecture', '?')}). "
        "Use --tune head or --tune full, which work for every timm model."
    )


def split_backbone(model: nn.Module, tune: str) -> BackboneSplit:
    """Cut a timm backbone (built with num_classes=0) for the given tune mode."""
    if tune == "head":
        return BackboneSplit(model, nn.Identity(), [], tune)
    if tune == "full":
        return BackboneSplit(nn.Identity(), model, [n for n, _ in model.named_parameters()], tune)
    kind = type(model).__name__
    if kind == "EfficientNet":  # also MobileNetV2 and the EfficientNet-Lite family
        return _efficientnet(model, tune)
    if kind == "ResNet":
        return _resnet(model, tune)
    if kind == "VisionTransformer":
        return _vit(model, tune)
    raise _unsupported(model, tune)
