"""The feature bank: shape, the clean view, and per-image deterministic augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from fewshot_bench.backbones import backbone_data_config, create_backbone
from fewshot_bench.bank import augmented_views, build_bank
from fewshot_bench.bank import normalised_views
from fewshot_bench.split import split_backbone

SIZE, VIEWS = 40, 4


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Smooth random colour images with some structure (so crops and flips differ)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 6, axis=1), 6, axis=2)  # [7, 48, 48, 3]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_backbone("tf_efficientnet_lite0", pretrained=False)


@pytest.fixture(scope="module")
def kw(model) -> dict:
    dc = backbone_data_config(model)
    return dict(n_views=VIEWS, size=SIZE, mean=dc["mean"], std=dc["std"],
                interpolation=dc["interpolation"], progress=False)


@pytest.fixture(scope="module")
def lower(model):
    return split_backbone(model, "norm").lower  # a feature map (positions x channels)


@pytest.fixture(scope="module")
def bank(lower, images, kw):
    return build_bank(lower, images, np.arange(len(images)), seed=0, **kw)


def _inputs_kw(kw: dict) -> dict:
    return {k: v for k, v in kw.items() if k != "progress"}


def test_shape_and_dtype(bank, lower, images):
    with torch.no_grad():
        feat = lower(torch.zeros(1, 3, SIZE, SIZE))
    assert bank.shape == (len(images), VIEWS, *feat.shape[1:])
    assert bank.dtype == torch.float32 and torch.isfinite(bank).all()


def test_view0_is_the_clean_resized_image(bank, lower, images, kw):
    dc_mean = torch.tensor(kw["mean"]).view(1, 3, 1, 1)
    dc_std = torch.tensor(kw["std"]).view(1, 3, 1, 1)
    clean = torch.stack([TF.resize(torch.from_numpy(im).permute(2, 0, 1), [SIZE, SIZE],
                                   interpolation=InterpolationMode.BICUBIC, antialias=True)
                         for im in images])
    x = (clean.float() / 255 - dc_mean) / dc_std
    with torch.no_grad():
        expected = lower(x)
    torch.testing.assert_close(bank[:, 0], expected, rtol=1e-4, atol=1e-4)


def test_reference_image_bank_gives_the_feature_bank(bank, lower, images, kw):
    """bank.normalised_views holds the very inputs behind the bank, every view."""
    x = normalised_views(images, np.arange(len(images)), seed=0, **_inputs_kw(kw))
    assert x.shape == (len(images), VIEWS, 3, SIZE, SIZE)
    with torch.no_grad():
        feats = lower(x.flatten(0, 1)).view(bank.shape)
    torch.testing.assert_close(feats, bank, rtol=1e-4, atol=1e-4)


def test_same_seed_same_bank(bank, lower, images, kw):
    again = build_bank(lower, images, np.arange(len(images)), seed=0, **kw)
    torch.testing.assert_close(again, bank, rtol=0, atol=0)


def test_per_image_streams(bank, lower, images, kw):
    """An image's views depend only on (seed, image index): not on which other images are
    in the bank, their order, or the batching."""
    ids = np.array([5, 2, 3])
    sub = build_bank(lower, images, ids, seed=0, batch_views=VIEWS, **kw)  # one image a batch
    torch.testing.assert_close(sub, bank[ids], rtol=1e-5, atol=1e-5)
    # the augmented inputs themselves are bit-identical
    full_x = normalised_views(images, np.arange(len(images)), seed=0, **_inputs_kw(kw))
    sub_x = normalised_views(images, ids, seed=0, **_inputs_kw(kw))
    assert torch.equal(sub_x, full_x[ids])


def test_other_seed_other_views(bank, lower, images, kw):
    other = build_bank(lower, images, np.arange(len(images)), seed=1, **kw)
    torch.testing.assert_close(other[:, 0], bank[:, 0], rtol=1e-6, atol=1e-6)  # clean view
    for v in range(1, VIEWS):
        diff = (other[:, v] - bank[:, v]).abs().flatten(1).amax(1)
        assert (diff > 1e-3).all(), f"view {v} did not change with the seed"


def test_augmented_views_are_distinct_crops(images):
    im = torch.from_numpy(images[0]).permute(2, 0, 1)
    rng = np.random.default_rng([0, 0])
    v = augmented_views(im, 6, SIZE, rng, InterpolationMode.BICUBIC)
    assert v.shape == (6, 3, SIZE, SIZE) and v.dtype == torch.uint8
    flat = v.flatten(1).float()
    assert all(not torch.equal(flat[i], flat[j]) for i in range(6) for j in range(i + 1, 6))
