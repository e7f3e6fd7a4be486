"""Process-level performance settings shared by the bank and the engine."""

from __future__ import annotations

import ctypes
import functools
import sys

import torch


@functools.cache
def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning it to the OS.

    Every training step allocates and frees feature-sized tensors (tens of MB). By default
    glibc serves those with fresh mmap pages and unmaps them on free, so each step pays
    page faults on every byte: profiling showed elementwise ops running 3-5x below memory
    bandwidth. Raising the mmap and trim thresholds removes that cost. No-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)
    libc.mallopt(m_top_pad, 256 << 20)


def as_compute_float(t: torch.Tensor) -> torch.Tensor:
    """float32 for the embeddings and features the harness computes with (an fp16/bf16
    autocast output is lifted), float64 left as float64: a float64 network runs through the
    bank, the engine and the reference loop unchanged, which is how the tests tell float
    rounding apart from a real difference (tests/test_last_agreement.py). The same rule as
    the losses' compute dtype."""
    return t if t.dtype == torch.float64 else t.float()
