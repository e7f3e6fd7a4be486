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

BatchNorm statistics stay frozen in every mode (the modules run in eval mode). What
``norm`` and ``last`` are in each backbone family is one function per family below, and
the table in docs/tune-modes.md; a mode that cannot apply to a backbone raises a
`BenchError` naming the modes that do.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn

from .config import TUNE_MODES
from .errors import BenchError
from .fused import gather_affine_clamp_pool


@dataclass
class BackboneSplit:
    """`lower` maps images to bank features; `upper` maps bank features to pooled
    embeddings [B, D]; `trainable` names the parameters of `upper` trained per episode;
    `sources` are the model's own parameters they start from, in the same order (the same
    tensors, or the ones an affine upper part cloned): what a whole-network reference loop
    trains."""

    lower: nn.Module
    upper: nn.Module
    trainable: list[str]
    tune: str
    sources: list[nn.Parameter]


class FrozenNorm(nn.Module):
    """The statistics half of an eval-mode BatchNorm, (x - running_mean) / sqrt(var + eps),
    returning channels-last positions [N, H*W, C].

    Running it in the frozen lower part leaves only a per-channel affine for the upper part,
    which batches over episodes as plain broadcasting (vmapping a BatchNorm with
    per-episode weights instead copies the feature map several times per step). Channels
    last keeps that broadcast on the contiguous dimension, which vectorises."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        shift, inv_std = _statistics(bn)
        self.register_buffer("shift", shift)
        self.register_buffer("inv_std", inv_std)

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)  # [N, H*W, C]
        return ((x - self.shift) * self.inv_std).contiguous()


def _statistics(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(running_mean, 1 / sqrt(running_var + eps)) of an eval-mode BatchNorm, as copies."""
    return bn.running_mean.detach().clone(), (bn.running_var.detach() + bn.eps).rsqrt()


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
    [..., P, C] -> [..., C]; then `head` (frozen layers after pooling, [N, C] -> [N, D]),
    if any."""

    def __init__(self, bn: nn.Module, head: nn.Module | None = None):
        super().__init__()
        self.weight = nn.Parameter(bn.weight.detach().clone())
        self.bias = nn.Parameter(bn.bias.detach().clone())
        self.act = bn.act if hasattr(bn, "act") else nn.Identity()
        self.head = head

    def _head(self, z: torch.Tensor) -> torch.Tensor:
        """The head on pooled features of any leading shape [..., C]."""
        if self.head is None:
            return z
        return self.head(z.flatten(0, -2)).view(*z.shape[:-1], -1)

    def forward(self, x):
        return self._head(self.act(x * self.weight + self.bias).mean(-2))

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
            return self._head(self.act(x * w + b).mean(-2))
        return self._head(_AffineClampPool.apply(x, params["weight"], params["bias"], *bounds))

    def forward_rows(self, params: dict, flat_bank: torch.Tensor,
                     rows: torch.Tensor) -> torch.Tensor | None:
        """`forward_episodes(params, flat_bank[rows])` as one compiled kernel (fused.py):
        rows [G, B] index flat_bank [M, P, C]. None where there is none (an activation
        other than ReLU6/ReLU) or compiling failed: the caller gathers and runs eagerly."""
        bounds = self._bounds()
        if bounds is None:
            return None
        z = gather_affine_clamp_pool(flat_bank, rows, params["weight"], params["bias"], *bounds)
        return None if z is None else self._head(z)


class _NotApplicable(Exception):
    """A tune mode that cannot apply to a backbone; the message says why (a clause)."""


def _shared(lower: nn.Module, upper: nn.Module, trainable: list[str], tune: str) -> BackboneSplit:
    """A split whose upper part holds the model's own modules: its trained parameters are
    the model's."""
    named = dict(upper.named_parameters())
    return BackboneSplit(lower, upper, trainable, tune, [named[n] for n in trainable])


def _all_of(lower: nn.Module, upper: nn.Module, tune: str) -> BackboneSplit:
    """`last`-style: everything in `upper` trains."""
    return _shared(lower, upper, [n for n, _ in upper.named_parameters()], tune)


def _affine(lower: nn.Module, bn: nn.Module, tune: str,
            head: nn.Module | None = None) -> BackboneSplit:
    """`norm` as FrozenNorm (end of `lower`) + AffineAct: `bn`'s affine, pooling, `head`."""
    return BackboneSplit(nn.Sequential(lower, FrozenNorm(bn)), AffineAct(bn, head),
                         ["weight", "bias"], tune, [bn.weight, bn.bias])


def _has_parameters(module: nn.Module | None) -> bool:
    return module is not None and any(True for _ in module.parameters())


def _check_frozen_bn(bn: nn.Module, where: str) -> None:
    """`norm` splits a BatchNorm into its frozen statistics and its affine: refuse any
    other normalisation (GroupNorm, a BatchNorm without running statistics or affine)."""
    if not (isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.affine):
        raise _NotApplicable(f"{where} is a {type(bn).__name__}, not a BatchNorm with running "
                             "statistics and an affine, which is what norm tunes")


def _check_avg_pool(pool: nn.Module) -> None:
    """AffineAct pools by the mean over positions: the model must pool the same way."""
    if getattr(pool, "pool_type", None) != "avg":
        kind = getattr(pool, "pool_type", type(pool).__name__)
        raise _NotApplicable(f"its global pooling is {kind!r}, and norm's fused affine and "
                             "pooling computes an average")


# -- EfficientNet, MobileNetV2 (timm class EfficientNet) --------------------------------
def _efficientnet(model: nn.Module, tune: str) -> BackboneSplit:
    # conv_stem, bn1, blocks[...], conv_head, bn2 (BatchNormAct2d), global_pool (flattening)
    # norm: bn2's affine + activation, on the 1x1 head conv's map; last: blocks[-1] onwards
    stem = nn.Sequential(model.conv_stem, model.bn1, *list(model.blocks)[:-1])
    if tune == "norm":
        _check_frozen_bn(model.bn2, "its final normalisation layer (bn2)")
        _check_avg_pool(model.global_pool)
        return _affine(nn.Sequential(stem, model.blocks[-1], model.conv_head), model.bn2, tune)
    return _all_of(stem, nn.Sequential(model.blocks[-1], model.conv_head, model.bn2,
                                       model.global_pool), tune)


# -- MobileNetV3 (timm class MobileNetV3, also MobileNetV4 and LCNet) ----------------------
def _mobilenetv3_head_conv(model: nn.Module) -> nn.Module | None:
    """The last stage when it is the lone 1x1 ConvBnAct (no skip) that timm's MobileNetV3
    files under `blocks` (EfficientNet's conv_head + bn2), else None."""
    stage = model.blocks[-1]
    block = stage[-1] if len(stage) == 1 else None
    # by name: timm defines ConvBnAct in a private module (_efficientnet_blocks)
    if type(block).__name__ == "ConvBnAct" and not block.has_skip \
            and isinstance(block.aa, nn.Identity):
        return block
    return None


class _PooledConvHead(nn.Module):
    """MobileNetV3's layers after pooling (conv_head: a 1x1 conv on the pooled vector,
    norm_head, act2, flatten): [N, C] -> [N, D]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.conv_head, self.norm_head, self.act2 = model.conv_head, model.norm_head, model.act2

    def forward(self, z):
        return self.act2(self.norm_head(self.conv_head(z[:, :, None, None]))).flatten(1)


def _mobilenetv3(model: nn.Module, tune: str) -> BackboneSplit:
    # conv_stem, bn1, blocks[...], global_pool, conv_head, norm_head, act2, flatten: the head
    # conv comes after pooling, so the last normalisation of a feature map is the BatchNorm
    # of the last block's 1x1 conv (blocks[-1][-1].bn1). norm: that BatchNorm's affine +
    # activation, then the frozen post-pooling head; last: the last stage before that 1x1
    # conv stage (blocks[-2], as `last` trains an inverted-residual stage in EfficientNet)
    # and everything after it.
    head_conv = _mobilenetv3_head_conv(model)
    blocks = list(model.blocks)
    first_upper = len(blocks) - (2 if head_conv is not None else 1)
    stem = nn.Sequential(model.conv_stem, model.bn1, *blocks[:first_upper])
    if tune == "norm":
        if head_conv is None:
            raise _NotApplicable(f"its last block is a {type(blocks[-1][-1]).__name__}, not the "
                                 "1x1 convolution + BatchNorm whose affine norm tunes")
        _check_frozen_bn(head_conv.bn1, "the normalisation layer of its last block")
        _check_avg_pool(model.global_pool)
        lower = nn.Sequential(stem, *blocks[first_upper:-1], head_conv.conv)
        return _affine(lower, head_conv.bn1, tune, _PooledConvHead(model))
    return _all_of(stem, nn.Sequential(*blocks[first_upper:], model.global_pool, model.conv_head,
                                       model.norm_head, model.act2, model.flatten), tune)


# -- ResNet, ResNeXt, SE-ResNet (timm class ResNet) ---------------------------------------
# Per block type: the modules before its last BatchNorm (timm's forward order), that
# BatchNorm, and the activation after the residual add.
_RESNET_BLOCKS = {
    BasicBlock: (("conv1", "bn1", "drop_block", "act1", "aa", "conv2"), "bn2", "act2"),
    Bottleneck: (("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3"),
                 "bn3", "act3"),
}


class _ResidualLower(nn.Module):
    """A residual block up to its last BatchNorm's statistics, and its shortcut:
    [N, C_in, H, W] -> [N, 2C, H, W], the normalised branch then the shortcut."""

    def __init__(self, block: nn.Module):
        super().__init__()
        body, bn, _ = _RESNET_BLOCKS[type(block)]
        self.body = nn.Sequential(*[getattr(block, n) for n in body])
        self.downsample = block.downsample or nn.Identity()
        shift, inv_std = _statistics(getattr(block, bn))
        self.register_buffer("shift", shift[:, None, None])
        self.register_buffer("inv_std", inv_std[:, None, None])

    def forward(self, x):
        return torch.cat([(self.body(x) - self.shift) * self.inv_std, self.downsample(x)], 1)


class _ResidualAffine(nn.Module):
    """The rest of that block: the BatchNorm's affine (trained), squeeze-excitation if any,
    the residual add, the activation; then the model's global pooling."""

    def __init__(self, block: nn.Module, pool: nn.Module):
        super().__init__()
        _, bn, act = _RESNET_BLOCKS[type(block)]
        self.weight = nn.Parameter(getattr(block, bn).weight.detach().clone())
        self.bias = nn.Parameter(getattr(block, bn).bias.detach().clone())
        self.se = block.se or nn.Identity()
        self.act = getattr(block, act)
        self.pool = pool

    def forward(self, x):
        branch, shortcut = x.chunk(2, dim=-3)
        branch = branch * self.weight[:, None, None] + self.bias[:, None, None]
        return self.pool(self.act(self.se(branch) + shortcut))


def _resnet(model: nn.Module, tune: str) -> BackboneSplit:
    # conv1, bn1, act1, maxpool, layer1..layer4, global_pool. last: layer4 (the last stage).
    # norm: the affine of the last BatchNorm of layer4's last block. It comes before the
    # block's residual add and activation, so the upper part is the end of that block
    # (affine, SE, + shortcut, activation) and the bank holds the normalised branch and the
    # shortcut side by side.
    stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool,
                         model.layer1, model.layer2, model.layer3)
    if tune == "last":
        return _all_of(stem, nn.Sequential(model.layer4, model.global_pool), tune)
    block = model.layer4[-1]
    if type(block) not in _RESNET_BLOCKS:
        raise _NotApplicable(f"its last block is a {type(block).__name__}, not a timm "
                             "BasicBlock or Bottleneck")
    bn = getattr(block, _RESNET_BLOCKS[type(block)][1])
    _check_frozen_bn(bn, "the last normalisation layer of its last block")
    if not isinstance(getattr(bn, "act", nn.Identity()), nn.Identity):
        raise _NotApplicable("the last BatchNorm of its last block has its own activation, "
                             "which would come before the residual add")
    lower = nn.Sequential(stem, *list(model.layer4)[:-1], _ResidualLower(block))
    upper = _ResidualAffine(block, model.global_pool)
    return BackboneSplit(lower, upper, ["weight", "bias"], tune, [bn.weight, bn.bias])


# -- ConvNeXt ------------------------------------------------------------------------------
def _convnext(model: nn.Module, tune: str) -> BackboneSplit:
    # stem, stages[...], norm_pre, head (global_pool, norm, flatten, pre_logits, drop).
    # norm: the final LayerNorm, head.norm, which timm applies after average pooling (the
    # bank holds pooled features); in head_norm_first models (e.g. convnext_tiny_hnf) the
    # final norm is norm_pre, on the feature map before the head. last: stages[-1] onwards.
    head = model.head
    stem = nn.Sequential(model.stem, *list(model.stages)[:-1])
    if tune == "last":
        return _all_of(stem, nn.Sequential(model.stages[-1], model.norm_pre, head), tune)
    lower = nn.Sequential(stem, model.stages[-1])
    if _has_parameters(getattr(head, "norm", None)):
        upper = nn.Sequential(OrderedDict(norm=head.norm, flatten=head.flatten,
                                          pre_logits=head.pre_logits, drop=head.drop))
        lower = nn.Sequential(lower, model.norm_pre, head.global_pool)
    elif _has_parameters(model.norm_pre):
        upper = nn.Sequential(OrderedDict(norm=model.norm_pre, head=head))
    else:
        raise _NotApplicable("it has no final normalisation layer with parameters")
    return _shared(lower, upper, [n for n, _ in upper.norm.named_parameters(prefix="norm")], tune)


# -- ViT, DeiT (timm VisionTransformer, VisionTransformerDistilled) ------------------------
class _VitUpper(nn.Module):
    """Final transformer block(s), final norm and the model's own head (token pooling, e.g.
    the class token, the average of the class and distillation tokens in distilled DeiT,
    or attention pooling; then fc_norm in average-pooling ViTs)."""

    def __init__(self, model: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.norm = model.norm
        self.fc_norm = model.fc_norm  # registered so that they train in `last` / `norm`
        self.attn_pool = model.attn_pool
        self._vit = [model]  # not a submodule: only used for its head's rule

    def forward(self, x):
        return self._vit[0].forward_head(self.norm(self.blocks(x)), pre_logits=True)


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
    # norm: the final LayerNorm (norm, or fc_norm after pooling in average-pooling ViTs) on
    # the last block's tokens; last: the last transformer block onwards
    k = {"norm": 0, "last": 1}[tune]
    lower = _VitLower(model, k)
    upper = _VitUpper(model, list(model.blocks)[len(model.blocks) - k:])
    if tune == "last":
        return _all_of(lower, upper, tune)
    trainable = [n for n, _ in upper.named_parameters() if n.startswith(("norm.", "fc_norm."))]
    if not trainable:
        raise _NotApplicable("it has no final normalisation layer with parameters")
    return _shared(lower, upper, trainable, tune)


# -- dispatch, refusals ------------------------------------------------------------------
FAMILIES = {  # timm class name -> its norm/last split
    "EfficientNet": _efficientnet,  # also MobileNetV2, EfficientNet-Lite and -V2
    "MobileNetV3": _mobilenetv3,
    "ResNet": _resnet,  # also ResNeXt, SE-ResNet(X), ResNet-D
    "ConvNeXt": _convnext,
    "VisionTransformer": _vit,  # also DeiT
    "VisionTransformerDistilled": _vit,  # distilled DeiT
}


def _split(model: nn.Module, tune: str) -> BackboneSplit:
    if tune == "head":
        return BackboneSplit(model, nn.Identity(), [], tune, [])
    if tune == "full":
        return _all_of(nn.Identity(), model, tune)
    family = FAMILIES.get(type(model).__name__)
    if family is None:
        names = sorted(FAMILIES)
        raise _NotApplicable("norm and last are defined only for the timm model classes "
                             f"{', '.join(names[:-1])} and {names[-1]}")
    return family(model, tune)


def supported_tunes(model: nn.Module) -> list[str]:
    """The tune modes `split_backbone` accepts for `model`, cheapest first."""
    def works(tune: str) -> bool:
        try:
            _split(model, tune)
        except _NotApplicable:
            return False
        return True

    return [t for t in TUNE_MODES if works(t)]


def _unsupported(model: nn.Module, tune: str, why: str) -> BenchError:
    # only modes that work on this model; head last and qualified, because the contrastive
    # methods refuse it (config.py), and a user must not be sent from one refusal to another
    others = [t for t in supported_tunes(model) if t not in (tune, "head")]
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", "?")
    instead = " or ".join(f"--tune {t}" for t in others)
    return BenchError(
        f"--tune {tune} is not available for this {type(model).__name__} backbone ({arch}): "
        f"{why}. Use {instead} instead (or --tune head if no method is contrastive); "
        "docs/tune-modes.md says what each mode trains in each family."
    )


def split_backbone(model: nn.Module, tune: str) -> BackboneSplit:
    """Cut a timm backbone (built with num_classes=0) for the given tune mode; a mode that
    cannot apply to it raises a `BenchError` naming the modes that can."""
    if tune not in TUNE_MODES:
        raise BenchError(f"Unknown --tune '{tune}'. Use one of {', '.join(TUNE_MODES)}.")
    try:
        return _split(model, tune)
    except _NotApplicable as exc:
        raise _unsupported(model, tune, str(exc)) from None
