"""The feature bank: frozen lower-network features of every image under a fixed set of
augmented views, computed once and shared by every episode and every method.

View 0 is the clean image (used for prototypes and for classifying queries); views
1..A-1 are random resized crops with horizontal flips. Each image's augmentations come from
its own random stream, seeded by (run seed, image index), so the bank does not depend on
which episodes are run, in what order, or in how many processes.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn
from torchvision.transforms import InterpolationMode
from tqdm.auto import tqdm

from .runtime import as_compute_float, keep_freed_memory

CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def _crop_box(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box sampling (torchvision's rule) from a numpy generator."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])))
        cw = int(round(np.sqrt(target * ratio)))
        ch = int(round(np.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return top, left, ch, cw
    return 0, 0, h, w


def augmented_views(image: torch.Tensor, n_views: int, size: int, rng: np.random.Generator,
                    interpolation: InterpolationMode) -> torch.Tensor:
    """uint8 [3, H, W] -> uint8 [n_views, 3, size, size]; view 0 is the whole image."""
    _, h, w = image.shape
    out = [TF.resize(image, [size, size], interpolation=interpolation, antialias=True)]
    for _ in range(n_views - 1):
        top, left, ch, cw = _crop_box(rng, h, w)
        v = TF.resized_crop(image, top, left, ch, cw, [size, size],
                            interpolation=interpolation, antialias=True)
        if rng.random() < 0.5:
            v = TF.horizontal_flip(v)
        out.append(v)
    return torch.stack(out)


def interpolation_mode(name: str) -> InterpolationMode:
    return {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
            "nearest": InterpolationMode.NEAREST}.get(name, InterpolationMode.BICUBIC)


def normalised_views(images: np.ndarray, image_ids: np.ndarray, *, n_views: int, size: int,
                     mean: tuple[float, ...], std: tuple[float, ...],
                     interpolation: str = "bicubic", seed: int = 0,
                     device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The network inputs of the bank: float32 [len(image_ids), n_views, 3, S, S], each
    image's views from its own stream ``default_rng([seed, image index])``. `dtype`
    float64: for a float64 network (the tests' float-rounding oracle)."""
    interp = interpolation_mode(interpolation)
    mean_t = torch.tensor(mean, device=device, dtype=dtype).view(1, 1, 3, 1, 1) * 255
    std_t = torch.tensor(std, device=device, dtype=dtype).view(1, 1, 3, 1, 1) * 255
    if len(image_ids) == 0:
        return torch.empty(0, n_views, 3, size, size, device=device, dtype=dtype)
    views = torch.stack([
        augmented_views(torch.from_numpy(images[i]).permute(2, 0, 1), n_views, size,
                        np.random.default_rng([seed, int(i)]), interp)
        for i in np.asarray(image_ids).reshape(-1)
    ])  # [b, A, 3, S, S] uint8
    return (views.to(device).to(dtype) - mean_t) / std_t


@torch.no_grad()
def build_bank(
    lower: nn.Module,
    images: np.ndarray,
    image_ids: np.ndarray,
    *,
    n_views: int,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    interpolation: str = "bicubic",
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_views: int = 64,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Features of `lower` for images[image_ids] under `n_views` views each:
    a float32 tensor [len(image_ids), n_views, *feature_shape] on `device` (`dtype`
    float64, for a float64 `lower`: inputs and features in float64)."""
    keep_freed_memory()
    device = torch.device(device)
    batch_images = max(1, batch_views // n_views)  # ~64 views a batch: best CPU throughput
    # channels_last: ~1.7x faster convolutions on CPU (oneDNN) and on tensor cores. On a
    # copy: the lower part shares modules with the caller's model.
    lower = copy.deepcopy(lower).eval().to(device, memory_format=torch.channels_last)
    chunks = []
    bar = tqdm(total=len(image_ids), desc="feature bank", unit="img", disable=not progress,
               leave=False)
    for start in range(0, len(image_ids), batch_images):
        ids = image_ids[start:start + batch_images]
        x = normalised_views(images, ids, n_views=n_views, size=size, mean=mean, std=std,
                             interpolation=interpolation, seed=seed, device=device,
                             dtype=dtype)
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            f = lower(x)
        f = as_compute_float(f).contiguous()
        chunks.append(f.view(len(ids), n_views, *f.shape[1:]))
        bar.update(len(ids))
    bar.close()
    return torch.cat(chunks)
