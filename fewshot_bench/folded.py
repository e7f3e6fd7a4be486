"""Convolutional upper parts run for many episodes at once, episodes folded into channels.

`--tune last` trains a whole stage per episode. `vmap(functional_call(...))` runs it with
per-episode weights by turning every convolution into a grouped one (one group per
episode), and a CPU runs a grouped 1x1 convolution far slower than the matrix product it
is: benchmarks/ceiling_last.py measured the engine at 3.7x the plain network's cost for
the same arithmetic. This module runs the model's own block code on a tensor whose
channels hold every episode side by side, [B, G*C, H, W], with each parameterised layer
swapped for one that reads per-episode weights [G, ...]:

- a 1x1 convolution becomes one batched matrix product over episodes (`torch.bmm`);
- any other convolution a grouped convolution with G x groups groups (what vmap does);
- an eval-mode BatchNorm the same BatchNorm over G*C channels, its running statistics
  repeated per episode and its affine the episodes' own.

Everything else in these blocks is per channel (activations, squeeze-excitation's
spatial mean, residual adds, average pooling), so it is correct on folded channels
unchanged. Only modules known to be so are accepted (`fold` returns None otherwise, and
the engine keeps vmap): a block that reshuffles channels would silently mix episodes.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, Conv2dSame, DropPath, SelectAdaptivePool2d
from timm.layers import activations as timm_act
from timm.layers.padding import pad_same
from timm.layers.squeeze_excite import SEModule
from timm.models._efficientnet_blocks import (ConvBnAct, DepthwiseSeparableConv, EdgeResidual,
                                              InvertedResidual, SqueezeExcite)
from timm.models.resnet import BasicBlock, Bottleneck
from torch import Tensor, nn
from torch.func import functional_call

# modules whose forward only composes their children with per-channel operations
_CONTAINERS = (nn.Sequential, InvertedResidual, DepthwiseSeparableConv, ConvBnAct,
               EdgeResidual, SqueezeExcite, SEModule, BasicBlock, Bottleneck)
# parameterless modules that act on each channel on its own
_PER_CHANNEL = (nn.Identity, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
                nn.Sigmoid, nn.GELU, nn.Tanh, nn.LeakyReLU, nn.Hardtanh, nn.Dropout,
                nn.Flatten, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, DropPath,
                timm_act.Swish, timm_act.Mish, timm_act.Sigmoid, timm_act.Tanh,
                timm_act.HardSwish, timm_act.HardSigmoid, timm_act.HardMish, timm_act.GELU,
                timm_act.GELUTanh, timm_act.QuickGELU)


class _FoldedConv2d(nn.Module):
    """A Conv2d on folded channels; weight [G, C_out, C_in/groups, kh, kw] per episode (or
    the shared [C_out, ...], which every episode then uses)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation, self.groups = conv.padding, conv.dilation, conv.groups
        self.same = isinstance(conv, Conv2dSame)  # TF 'SAME' padding, computed per input
        self.pointwise = (conv.kernel_size == (1, 1) and conv.stride == (1, 1)
                          and conv.groups == 1 and not self.same
                          and conv.padding in ((0, 0), "valid", "same"))

    def forward(self, x: Tensor) -> Tensor:
        b, gc, h, w_ = x.shape
        g = gc // self.in_channels
        w = self.weight if self.weight.dim() == 5 else self.weight.expand(g, *self.weight.shape)
        bias = self.bias
        if bias is not None and bias.dim() == 1:
            bias = bias.expand(g, -1)
        if self.pointwise:  # [G, C_out, C_in] @ [G, C_in, B*H*W]
            xe = x.reshape(b, g, self.in_channels, h * w_).permute(1, 2, 0, 3)
            xe = xe.reshape(g, self.in_channels, b * h * w_)
            y = torch.bmm(w.reshape(g, self.out_channels, self.in_channels), xe)
            if bias is not None:
                y = y + bias[..., None]
            y = y.view(g, self.out_channels, b, h * w_).permute(2, 0, 1, 3)
            return y.reshape(b, g * self.out_channels, h, w_)
        if self.same:
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        return F.conv2d(x, w.reshape(-1, *w.shape[2:]),
                        None if bias is None else bias.reshape(-1), self.stride,
                        0 if self.same else self.padding, self.dilation, self.groups * g)


class _FoldedBatchNorm(nn.Module):
    """An eval-mode BatchNorm2d (or timm's BatchNormAct2d, with its drop and activation) on
    folded channels; weight, bias [G, C] per episode, running statistics shared."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)
        self.num_features, self.eps = bn.num_features, bn.eps
        self.drop = getattr(bn, "drop", nn.Identity())
        self.act = getattr(bn, "act", nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        g = x.shape[1] // self.num_features

        def per_episode(t: Tensor) -> Tensor:
            return t.reshape(-1) if t.dim() == 2 else t.repeat(g)

        x = F.batch_norm(x, self.running_mean.repeat(g), self.running_var.repeat(g),
                         per_episode(self.weight), per_episode(self.bias), False, 0.0, self.eps)
        return self.act(self.drop(x))


def _foldable(module: nn.Module) -> bool:
    if isinstance(module, nn.Conv2d):
        return type(module) in (nn.Conv2d, Conv2dSame) and module.padding_mode == "zeros"
    if isinstance(module, nn.BatchNorm2d):
        return (type(module) in (nn.BatchNorm2d, BatchNormAct2d) and module.affine
                and module.track_running_stats
                and all(_foldable(m) for m in module.children()))
    if isinstance(module, SelectAdaptivePool2d):  # 'catavgmax' would interleave episodes
        return module.pool_type in ("avg", "max") and _foldable(module.pool)
    if type(module) in _PER_CHANNEL:
        return True
    if type(module) in _CONTAINERS:
        if getattr(module, "conv_s2d", None) is not None:  # space-to-depth moves channels
            return False
        return all(_foldable(m) for m in module.children())
    return False


def _swap(module: nn.Module) -> nn.Module:
    """`module` (a copy) with every Conv2d and BatchNorm replaced by its folded twin."""
    if isinstance(module, nn.Conv2d):
        return _FoldedConv2d(module)
    if isinstance(module, nn.BatchNorm2d):
        return _FoldedBatchNorm(module)
    for name, child in module.named_children():
        setattr(module, name, _swap(child))
    return module


class FoldedUpper(nn.Module):
    """The upper part with folded layers: `forward_episodes(tensors, x)` takes the upper
    part's parameters and buffers by their names (trained ones [G, ...]) and bank features
    x [G, B, C, H, W], and returns embeddings [G, B, D]."""

    def __init__(self, upper: nn.Module):
        super().__init__()
        self.net = _swap(copy.deepcopy(upper))

    def forward_episodes(self, tensors: dict[str, Tensor], x: Tensor) -> Tensor:
        g, b = x.shape[:2]
        folded = x.transpose(0, 1).reshape(b, g * x.shape[2], *x.shape[3:])
        z = functional_call(self.net, tensors, (folded,))
        return z.view(b, g, -1).transpose(0, 1)


def fold(upper: nn.Module) -> FoldedUpper | None:
    """`FoldedUpper(upper)` where every module of `upper` is known to be per channel (an
    eval-mode convolutional stage ending in average or max pooling), else None."""
    if upper.training or not _foldable(upper):
        return None
    return FoldedUpper(upper)
