"""Peak memory of the current process: RSS high-water mark and, on CUDA, torch's peak."""

from __future__ import annotations

import resource
import sys

import torch

__all__ = ["peak_memory", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """High-water resident set size of this process in MiB (``getrusage`` ru_maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def peak_memory() -> dict[str, float]:
    """``{"peak_rss_mb": ..., "cuda_max_allocated_mb": ...}`` (the CUDA key only when CUDA is
    initialised: ``torch.cuda.max_memory_allocated`` summed over devices)."""
    out = {"peak_rss_mb": peak_rss_mb()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        total = sum(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count()))
        out["cuda_max_allocated_mb"] = round(total / 2**20, 1)
    return out
