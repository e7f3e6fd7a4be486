"""`--tune norm` and `--tune last` across the timm families of docs/tune-modes.md.

For every family x mode of the support table: the split builds on a small random-init timm
model, lower then upper is the model's own forward (eval mode, float64), the trained
parameters are in `upper` and are exactly the ones the mode names (written out below per
family, independently of split.py), and the episode engine trains two tiny episodes on a
bank of random images. Where a mode cannot apply, the error names only modes that work.
"""

from __future__ import annotations

import copy
import re
from functools import partial

import numpy as np
import pytest
import timm
import torch
from timm.layers import GroupNorm
from torch import nn

from norm_helpers import randomise_norms
from fewshot_bench import finetune
from fewshot_bench.bank import build_bank
from fewshot_bench.errors import BenchError
from fewshot_bench.finetune import EpisodeFinetuner, FinetuneConfig
from fewshot_bench.split import split_backbone, supported_tunes

CNN, VIT = 64, 32  # input sizes: a 2x2 final map for the CNNs, 2x2 patches for the ViTs
VIT_KW = dict(img_size=VIT, depth=2)


def _efficientnet(m, tune):
    return [m.bn2] if tune == "norm" else [m.blocks[-1], m.conv_head, m.bn2]


def _mobilenetv3(m, tune):  # blocks[-1] is the lone 1x1 ConvBnAct stage
    if tune == "norm":
        return [m.blocks[-1][-1].bn1]
    return [m.blocks[-2], m.blocks[-1], m.conv_head, m.norm_head]  # norm_head: BN in V4


def _resnet(m, tune):
    last = m.layer4[-1]
    return [getattr(last, "bn3", last.bn2)] if tune == "norm" else [m.layer4]


def _convnext(m, tune):
    return [m.head.norm] if tune == "norm" else [m.stages[-1], m.head]


def _convnext_hnf(m, tune):
    return [m.norm_pre] if tune == "norm" else [m.stages[-1], m.norm_pre]


def _vit(m, tune):
    return [m.norm, m.fc_norm] if tune == "norm" else [m.blocks[-1], m.norm, m.fc_norm]


# family -> (timm name, create_model kwargs, input size, the modules whose parameters
# each mode trains)
FAMILIES = {
    "efficientnet": ("efficientnet_b0", {}, CNN, _efficientnet),  # SiLU: autograd path
    "mobilenetv2": ("mobilenetv2_035", {}, CNN, _efficientnet),  # ReLU6: hand-written path
    "mobilenetv3": ("mobilenetv3_small_050", {}, CNN, _mobilenetv3),
    "mobilenetv4": ("mobilenetv4_conv_small", {}, CNN, _mobilenetv3),  # timm class MobileNetV3
    "resnet": ("resnet10t", {}, CNN, _resnet),  # BasicBlock
    # ResNeXt: Bottleneck, grouped conv, SE after bn3 (before the residual add), ResNet-D
    "resnext": ("seresnext26d_32x4d", dict(layers=(1, 1, 1, 1)), CNN, _resnet),
    "convnext": ("convnext_atto", dict(depths=(1, 1, 1, 1)), CNN, _convnext),
    "convnext-hnf": ("convnext_tiny_hnf", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)), CNN,
                     _convnext_hnf),
    "vit": ("vit_tiny_patch16_224", VIT_KW, VIT, _vit),
    "vit-avgpool": ("vit_tiny_patch16_224", dict(VIT_KW, global_pool="avg"), VIT, _vit),
    "deit": ("deit_tiny_patch16_224", VIT_KW, VIT, _vit),
    "deit-distilled": ("deit_tiny_distilled_patch16_224", VIT_KW, VIT, _vit),
}
TUNES = ("norm", "last")
_models: dict[str, nn.Module] = {}


def _model(family: str) -> nn.Module:
    if family not in _models:
        name, kw, _, _ = FAMILIES[family]
        torch.manual_seed(0)
        _models[family] = randomise_norms(timm.create_model(name, pretrained=False,
                                                            num_classes=0, **kw))
    return _models[family]


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("tune", TUNES)
@pytest.mark.parametrize("family", FAMILIES)
def test_lower_then_upper_is_the_model(family, tune):
    # float64: the split reorders the arithmetic (statistics and affine apart), which float32
    # rounding amplifies through the layers after it to ~1e-5
    model = copy.deepcopy(_model(family)).double()
    x = _images(2, FAMILIES[family][2]).double()
    with torch.no_grad():
        split = split_backbone(model, tune)
        got, expected = split.upper(split.lower(x)), model(x)
    assert got.shape == expected.shape and expected.shape[0] == 2 and expected.dim() == 2
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("tune", TUNES)
@pytest.mark.parametrize("family", FAMILIES)
def test_trainable_parameters_are_the_ones_the_mode_names(family, tune):
    model = _model(family)
    split = split_backbone(model, tune)
    named = FAMILIES[family][3](model, tune)
    expected = [p for m in named for p in m.parameters()]
    assert expected and {id(p) for p in split.sources} == {id(p) for p in expected}
    assert len(split.sources) == len(split.trainable) == len(expected)
    upper = dict(split.upper.named_parameters())
    for name, source in zip(split.trainable, split.sources):
        # the upper part holds the model's own tensor, or (an affine part) a clone of it
        assert upper[name] is source or (upper[name] is not source
                                         and torch.equal(upper[name], source))
    assert supported_tunes(model) == ["head", "norm", "last", "full"]


def test_cheaper_modes_train_subsets():
    for family in FAMILIES:
        model = _model(family)
        ids = {t: {id(p) for p in split_backbone(model, t).sources} for t in TUNES + ("full",)}
        assert ids["norm"] < ids["last"] < ids["full"], family


@pytest.mark.parametrize("tune", TUNES)
@pytest.mark.parametrize("family", FAMILIES)
def test_engine_trains_two_episodes(family, tune, monkeypatch):
    model, size = _model(family), 32  # a 1x1 final map in the CNNs: training is the point
    split = split_backbone(model, tune)
    images = np.random.default_rng(0).integers(0, 256, (8, size, size, 3), dtype=np.uint8)
    bank = build_bank(split.lower, images, np.arange(8), n_views=3, size=size,
                      mean=(0.5,) * 3, std=(0.25,) * 3, progress=False)
    engine = EpisodeFinetuner(split, bank, ways=2, shots=2, compile=False)
    optimised = []  # the per-episode parameter copies the engine trains, seen at the optimiser
    make = finetune._make_optimizer
    monkeypatch.setattr(finetune, "_make_optimizer",
                        lambda params, cfg, head=(): optimised.extend([*params, *head])
                        or make(params, cfg, head))
    support = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    query = torch.tensor([[4, 6], [0, 2]])  # another episode's support images
    res = engine.finetune(support, query, np.arange(2), 0,
                          FinetuneConfig(lam=0.5, steps=2, views=2, lr=0.01))
    assert not res.failed.any()
    assert np.isfinite(res.loss_curve).all() and np.isfinite(res.loss_after).all()
    trained = optimised[:-1]  # the head is last
    assert len(trained) == len(split.trainable)
    for p, name in zip(trained, split.trainable):
        changed = (p.detach() != engine.params0[name]).reshape(len(p), -1).any(1)
        assert changed.any(), name  # Adam moves every tensor with a gradient
    assert all(any((p.detach()[e] != engine.params0[n][e]).any()
                   for p, n in zip(trained, split.trainable)) for e in range(2))


# -- where a mode cannot apply ---------------------------------------------------------------
REFUSED = {  # (timm name, kwargs, refused mode, the modes that work)
    "lcnet-norm": ("lcnet_050", {}, "norm", ["head", "last", "full"]),
    "resnet-groupnorm": ("resnet10t", dict(norm_layer=partial(GroupNorm, num_groups=8)), "norm",
                         ["head", "last", "full"]),
    "efficientnet-maxpool": ("mobilenetv2_035", dict(global_pool="max"), "norm",
                             ["head", "last", "full"]),
    "byobnet": ("resnext26ts", {}, "last", ["head", "full"]),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refusal_names_only_modes_that_work(case):
    name, kw, tune, works = REFUSED[case]
    model = timm.create_model(name, pretrained=False, num_classes=0, **kw).eval()
    assert supported_tunes(model) == works
    with pytest.raises(BenchError, match=f"--tune {tune} is not available") as info:
        split_backbone(model, tune)
    message = str(info.value)
    suggested = set(re.findall(r"--tune (\w+)", message)) - {tune}
    assert suggested == set(works)
    assert "--tune head if no method is contrastive" in message  # config.py refuses it there
    assert "\n" not in message
    for t in suggested:
        split_backbone(model, t)
