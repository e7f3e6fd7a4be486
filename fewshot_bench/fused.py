"""One compiled kernel for the default training step (`--tune norm`): gather the step's bank
views, apply each episode's FiLM affine, clamp (ReLU6 / ReLU) and average-pool, in one pass.

On bank features that step is memory-bound: eager PyTorch reads and writes the [G, B, P, C]
feature map about ten times per step (gather, affine, clamp, pool; in the backward the
affine again, the clamp's mask, two reductions). `torch.compile` fuses it into one read of
the bank rows that yields the pooled output and, for the backward, the two per-(episode,
image, channel) sums it needs, over the positions P where the clamp passes gradient:

    d out / d w = mean_p [lo < pre < hi] * x,    d out / d b = mean_p [lo < pre < hi]

so the backward is a few [G, B, C] products. Same maths as the eager path, different
float rounding (sums in another order; the affine may use a fused multiply-add), so
results agree with the eager engine to float precision, not bit for bit.

Compiling a shape takes seconds (a C++ compiler on a CPU, Triton on a GPU), so the engine
uses it only where the feature map is large (`worth_compiling`), and falls back to eager
for good, with a warning, if compiling fails (no compiler, an unsupported platform).
"""

from __future__ import annotations

import functools
import logging
import warnings

import torch
from torch import Tensor

# Elements of one episode's step feature map (images x positions x channels) from which
# compiling pays: the default 5-way 1-shot emoji run has 10 x 16 x 1280 = 205k; the test
# suite's 32 px runs have one position (13k) and stay eager.
MIN_EPISODE_ELEMENTS = 100_000

_failed: list[str] = []  # why compiling failed once in this process (then eager for good)


def compile_error() -> str | None:
    """Why compiling failed in this process (the engine then runs eagerly), else None."""
    return _failed[0] if _failed else None


def worth_compiling(images: int, feature_shape: torch.Size, device: torch.device) -> bool:
    """Whether a step over `images` bank views of `feature_shape` [P, C] per episode is
    large enough to repay compiling it, on a device where torch.compile works."""
    if _failed or device.type not in ("cpu", "cuda"):
        return False
    return images * feature_shape.numel() >= MIN_EPISODE_ELEMENTS


@functools.lru_cache(maxsize=None)
def _kernel(lo: float, hi: float):
    # inductor's CPU build path imports cpp_extension, which logs "No CUDA runtime is found"
    # on every CPU-only machine: noise in the middle of a run's output
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

    def gather_affine_clamp_pool(flat_bank: Tensor, rows: Tensor, w: Tensor, b: Tensor):
        g, n = rows.shape
        x = flat_bank[rows.flatten()].view(g, n, *flat_bank.shape[1:]).to(w.dtype)
        pre = x * w[:, None, None, :] + b[:, None, None, :]
        passes = (pre > lo) & (pre < hi)
        out = pre.clamp(lo, hi).mean(-2)
        count = passes.sum(-2, dtype=torch.float32)
        masked_x = torch.where(passes, x, 0.0).sum(-2)
        return out, count, masked_x

    # dynamic=None: the first shape compiles static, a second one (the run's last, smaller
    # window of episodes) compiles once with a dynamic episode dimension
    return torch.compile(gather_affine_clamp_pool, dynamic=None)


class _GatherAffineClampPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, flat_bank, rows, w, b, lo: float, hi: float):
        out, count, masked_x = _kernel(lo, hi)(flat_bank, rows, w.detach(), b.detach())
        ctx.save_for_backward(count, masked_x)
        ctx.positions = flat_bank.shape[-2]
        return out

    @staticmethod
    def backward(ctx, grad):
        count, masked_x = ctx.saved_tensors
        grad = grad / ctx.positions
        return None, None, (grad * masked_x).sum(1), (grad * count).sum(1), None, None


def gather_affine_clamp_pool(flat_bank: Tensor, rows: Tensor, w: Tensor, b: Tensor,
                             lo: float, hi: float) -> Tensor | None:
    """mean_p clamp(flat_bank[rows] * w + b, lo, hi): flat_bank [M, P, C] (no gradient),
    rows [G, B] bank rows, w, b [G, C] -> [G, B, C]. None when compiling failed (the caller
    then takes its eager path)."""
    if _failed:
        return None
    try:
        return _GatherAffineClampPool.apply(flat_bank, rows, w, b, lo, hi)
    except Exception as exc:  # noqa: BLE001 - any compiler failure: eager from now on
        _failed.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        warnings.warn("torch.compile of the fused training step failed; the engine runs it "
                      f"eagerly (same maths, slower) from now on ({_failed[0]})", stacklevel=2)
        return None
