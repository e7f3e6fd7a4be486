"""Where the backbone is cut: upper(lower(x)) must be the whole network, in every mode."""

from __future__ import annotations

import pytest
import torch
from timm.layers import BatchNormAct2d
from torch import nn

from norm_helpers import randomise_norms
from fewshot_bench.backbones import create_backbone
from fewshot_bench.errors import BenchError
from fewshot_bench.split import AffineAct, FrozenNorm, split_backbone

MODES = ("head", "norm", "last", "full")
SIZE = 64


@pytest.fixture(scope="module", params=["tf_efficientnet_lite0", "mobilenetv2_100"])
def model(request):
    torch.manual_seed(0)
    return randomise_norms(create_backbone(request.param, pretrained=False))


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tune", MODES)
def test_upper_of_lower_is_the_whole_network(model, images, tune):
    with torch.no_grad():
        expected = model(images)
        split = split_backbone(model, tune)
        got = split.upper(split.lower(images))
    assert got.shape == expected.shape == (len(images), model.num_features)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert split.tune == tune


@pytest.mark.parametrize("tune", MODES)
def test_trainable_names_are_upper_parameters(model, tune):
    split = split_backbone(model, tune)
    upper = dict(split.upper.named_parameters())
    assert set(split.trainable) <= set(upper)
    assert len(set(split.trainable)) == len(split.trainable)
    if tune == "head":
        assert split.trainable == []
    elif tune == "norm":
        assert split.trainable == ["weight", "bias"]
        assert isinstance(split.upper, AffineAct) and isinstance(split.lower[-1], FrozenNorm)
        # clones: training the episode copy must never touch the pretrained model
        assert split.upper.weight is not model.bn2.weight
        torch.testing.assert_close(split.upper.weight, model.bn2.weight)
    elif tune == "last":
        last_block = {id(p) for p in model.blocks[-1].parameters()}
        assert last_block <= {id(upper[n]) for n in split.trainable}
        assert not any(id(p) in {id(upper[n]) for n in split.trainable}
                       for p in model.blocks[0].parameters())
    else:
        assert len(split.trainable) == len(list(model.parameters()))


def test_lower_parts_nest(model):
    """Cheaper modes train a subset of what dearer modes train (sizes of the trained part)."""
    sizes = {t: sum(dict(split_backbone(model, t).upper.named_parameters())[n].numel()
                    for n in split_backbone(model, t).trainable) for t in MODES}
    assert sizes["head"] == 0 < sizes["norm"] < sizes["last"] < sizes["full"]


# -- the norm mode's hand-written autograd -------------------------------------------------
def _affine(act: nn.Module, channels: int = 16) -> AffineAct:
    bn = BatchNormAct2d(channels, act_layer=act)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2.0, channels))
        bn.bias.copy_(torch.linspace(-1.0, 1.0, channels))
    return AffineAct(bn)


@pytest.mark.parametrize("act", [nn.ReLU6, nn.ReLU])
def test_norm_fast_path_matches_autograd(act):
    g = torch.Generator().manual_seed(0)
    mod = _affine(act)
    assert mod._bounds() is not None  # the fast path is taken
    G, B, P, C = 3, 4, 5, 16
    x = 4 * torch.randn(G, B, P, C, generator=g)  # wide: both clamp bounds are hit
    w = (1 + 0.5 * torch.randn(G, C, generator=g)).requires_grad_()
    b = torch.randn(G, C, generator=g).requires_grad_()
    upstream = torch.randn(G, B, C, generator=g)

    fast = mod.forward_episodes({"weight": w, "bias": b}, x)
    (fast * upstream).sum().backward()
    gw_fast, gb_fast = w.grad.clone(), b.grad.clone()
    w.grad = b.grad = None

    plain = mod.act(x * w[:, None, None, :] + b[:, None, None, :]).mean(-2)
    (plain * upstream).sum().backward()
    torch.testing.assert_close(fast, plain, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gw_fast, w.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gb_fast, b.grad, rtol=1e-5, atol=1e-6)
    pre = x * w[:, None, None, :] + b[:, None, None, :]
    assert (pre < 0).any() and (act is nn.ReLU or (pre > 6).any())


def test_norm_fast_path_gradcheck():
    mod = _affine(nn.ReLU6, channels=4).double()
    g = torch.Generator().manual_seed(0)
    x = 4 * torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    w = (1 + 0.3 * torch.randn(2, 4, generator=g, dtype=torch.float64)).requires_grad_()
    b = torch.randn(2, 4, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda w, b: mod.forward_episodes({"weight": w, "bias": b}, x),
                                    (w, b))


def test_norm_forward_episodes_equals_forward():
    """One episode's slice of forward_episodes is the module's plain forward."""
    mod = _affine(nn.ReLU6)
    x = 4 * torch.randn(2, 3, 5, 16, generator=torch.Generator().manual_seed(2))
    params = {"weight": mod.weight.detach().expand(2, -1), "bias": mod.bias.detach().expand(2, -1)}
    with torch.no_grad():
        torch.testing.assert_close(mod.forward_episodes(params, x), mod(x), rtol=1e-6, atol=1e-6)


def test_other_activations_take_the_autograd_path():
    mod = _affine(nn.SiLU)
    assert mod._bounds() is None
    x = torch.randn(2, 3, 5, 16)
    w = torch.ones(2, 16, requires_grad=True)
    out = mod.forward_episodes({"weight": w, "bias": torch.zeros(2, 16)}, x)
    torch.testing.assert_close(out, nn.functional.silu(x).mean(-2))


# -- other architectures, errors ----------------------------------------------------------
def test_resnet_last():
    torch.manual_seed(0)
    model = randomise_norms(create_backbone("resnet10t", pretrained=False))
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    split = split_backbone(model, "last")
    with torch.no_grad():
        torch.testing.assert_close(split.upper(split.lower(x)), model(x), rtol=1e-5, atol=1e-5)
    upper = dict(split.upper.named_parameters())
    assert split.trainable and set(split.trainable) <= set(upper)
    assert {id(p) for p in model.layer4.parameters()} == {id(upper[n]) for n in split.trainable}


def test_unsupported_modes_raise_bench_error():
    odd = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for tune in ("norm", "last"):
        with pytest.raises(BenchError, match=f"--tune {tune} is not available.*Use --tune full"):
            split_backbone(odd, tune)
    # head and full work for any module
    x = torch.randn(1, 3, 8, 8)
    for tune in ("head", "full"):
        split = split_backbone(odd, tune)
        torch.testing.assert_close(split.upper(split.lower(x)), odd(x))
