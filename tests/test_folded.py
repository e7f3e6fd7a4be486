"""folded.py: episodes folded into channels give what vmap over the model gives.

For each convolutional `--tune last` upper part: every episode gets its own perturbed
parameters, and the folded forward must equal `vmap(functional_call(upper))` (the
engine's general path) in float64, outputs and the gradient of every per-episode
parameter; an episode reading another's weights or statistics would show. Modules not
known to be per channel are refused (None), so the engine keeps vmap for them.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from timm.layers import Conv2dSame, SelectAdaptivePool2d
from torch import nn
from torch.func import functional_call, vmap

from norm_helpers import randomise_norms
from fewshot_bench.backbones import create_backbone
from fewshot_bench.finetune import EpisodeFinetuner
from fewshot_bench.folded import fold
from fewshot_bench.split import split_backbone

G, B, SIZE = 3, 2, 64  # episodes, images per episode, input pixels (a 2x2 final map)


def _timm(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return randomise_norms(timm.create_model(name, pretrained=False, num_classes=0, **kw))


FOLDABLE = {  # what each exercises
    "tf_efficientnet_lite0": lambda: create_backbone("tf_efficientnet_lite0"),  # the default
    "efficientnet_b0": lambda: _timm("efficientnet_b0"),  # SiLU, squeeze-excitation
    "mobilenetv2": lambda: _timm("mobilenetv2_035"),  # ReLU6
    "mobilenetv3": lambda: _timm("mobilenetv3_small_050"),  # hard-sigmoid SE, conv after pool
    "resnet": lambda: _timm("resnet10t"),  # BasicBlock, strided downsample
    # Bottleneck, grouped 3x3 conv, SE, average-pool downsample (ResNet-D)
    "resnext": lambda: _timm("seresnext26d_32x4d", layers=(1, 1, 1, 1)),
}


def _episode_params(upper: nn.Module) -> dict[str, torch.Tensor]:
    """Each trained tensor [G, ...], every episode's copy perturbed differently."""
    g = torch.Generator().manual_seed(3)
    return {n: (p.detach().unsqueeze(0).repeat(G, *[1] * p.dim())
                * (1 + 0.1 * torch.randn(G, *p.shape, generator=g, dtype=p.dtype))
                ).requires_grad_()
            for n, p in upper.named_parameters()}


def _vmapped(upper: nn.Module, params: dict, x: torch.Tensor,
             frozen: dict | None = None) -> torch.Tensor:
    """The engine's general path: per-episode `params`, shared `frozen` (default: buffers)."""
    frozen = dict(upper.named_buffers()) if frozen is None else frozen
    return vmap(lambda p, xe: functional_call(upper, {**p, **frozen}, (xe,)))(params, x)


def _last_upper(build) -> tuple[nn.Module, torch.Tensor]:
    split = split_backbone(build().double().eval(), "last")
    upper = split.upper.eval()
    with torch.no_grad():
        feat = split.lower(torch.randn(1, 3, SIZE, SIZE, dtype=torch.float64))[0]
    x = torch.randn(G, B, *feat.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    return upper, x


@pytest.mark.parametrize("name", FOLDABLE)
def test_folded_equals_vmap(name):
    upper, x = _last_upper(FOLDABLE[name])
    folded = fold(upper)
    assert folded is not None
    params = _episode_params(upper)
    want = _vmapped(upper, params, x)
    got = folded.forward_episodes({**params, **dict(upper.named_buffers())}, x)
    assert got.shape == want.shape == (G, B, want.shape[-1])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    weights = torch.randn(want.shape, dtype=want.dtype)  # a loss that differs per output
    grad_want = torch.autograd.grad((want * weights).sum(), list(params.values()))
    grad_got = torch.autograd.grad((got * weights).sum(), list(params.values()))
    for n, gw, gg in zip(params, grad_want, grad_got):
        torch.testing.assert_close(gg, gw, rtol=1e-9, atol=1e-12, msg=n)


def test_shared_weights_and_same_padding():
    """A layer whose weights are not trained (no episode dimension) is used by every
    episode; TF 'SAME' padding (Conv2dSame, stride 2) is padded as timm pads it."""
    torch.manual_seed(0)
    upper = nn.Sequential(Conv2dSame(4, 6, 3, stride=2, bias=True), nn.BatchNorm2d(6),
                          nn.ReLU(), nn.Conv2d(6, 5, 1, bias=True),
                          SelectAdaptivePool2d(pool_type="avg", flatten=True)).double()
    randomise_norms(upper)
    x = torch.randn(G, B, 4, 7, 7, dtype=torch.float64)
    params = {n: p for n, p in _episode_params(upper).items() if not n.startswith("0.")}
    frozen = {**dict(upper.named_buffers()), "0.weight": upper[0].weight, "0.bias": upper[0].bias}
    want = _vmapped(upper, params, x, frozen)
    got = fold(upper).forward_episodes({**params, **frozen}, x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("build, why", [
    (lambda: split_backbone(_timm("convnext_atto", depths=(1, 1, 1, 1)), "last").upper,
     "LayerNorm2d normalises across channels"),
    (lambda: split_backbone(_timm("test_vit", img_size=32), "last").upper, "tokens, not maps"),
    (lambda: split_backbone(_timm("mobilenetv4_conv_small"), "last").upper,
     "UniversalInvertedResidual: not listed"),
    (lambda: nn.Sequential(nn.Conv2d(4, 4, 1), SelectAdaptivePool2d(pool_type="catavgmax")),
     "concatenates along channels"),
    (lambda: nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")),
     "non-zero padding"),
    (lambda: nn.Sequential(nn.Conv2d(4, 4, 1), nn.PReLU(4)), "a per-channel parameter"),
])
def test_refused(build, why):
    assert fold(build().eval()) is None, why


def test_training_mode_refused():
    """Batch statistics would be computed over all episodes' images together."""
    assert fold(nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).train()) is None


def test_engine_uses_the_folded_path_for_the_default_backbone():
    split = split_backbone(create_backbone("tf_efficientnet_lite0").eval(), "last")
    bank = torch.randn(4, 2, 192, 1, 1)
    engine = EpisodeFinetuner(split, bank, ways=2, shots=1)
    assert engine.folded is not None
    vit = split_backbone(_timm("test_vit", img_size=32), "last")
    assert EpisodeFinetuner(vit, torch.randn(4, 2, 5, 64), ways=2, shots=1).folded is None
    assert np.isfinite(engine.clean_embeddings.numpy()).all()
