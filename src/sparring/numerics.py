"""Make every CPU process compute the same numbers: resolve MKL VML's kernel dispatch up front.

PyTorch hands contiguous float unary ops (cos, exp, log, sqrt, ...) to MKL VML, one chunk per
intra-op thread. oneMKL 2024.2 (the version in the torch wheels) picks each function's kernel
lazily on its first call, and when that first call runs on several threads at once one chunk can
silently use the low-accuracy kernel (pytorch/pytorch#188792; errors of ~1e-4 in cos were
measured here, in the rotary embedding of the first forward pass of a fresh process). That made a
resumed run drift from an uninterrupted one. Calling each function once on one element, on one
thread, settles the dispatch before any concurrent use; it costs well under a millisecond.
"""

from __future__ import annotations

import torch

_VML_OPS = (
    "abs", "acos", "asin", "atan", "ceil", "cos", "cosh", "erf", "erfc", "erfinv", "exp", "expm1", "floor",
    "lgamma", "log", "log10", "log1p", "log2", "neg", "reciprocal", "round", "rsqrt", "sigmoid", "sin",
    "sinh", "sqrt", "tan", "tanh", "trunc",
)  # fmt: skip

_primed = False


def prime_vml() -> None:
    """Call each VML-backed unary op once per float type on a single element (single-threaded)."""
    global _primed
    if _primed:
        return
    for dtype in (torch.float32, torch.float64):
        one = torch.full((1,), 0.5, dtype=dtype)
        for name in _VML_OPS:
            getattr(torch, name)(one)
    _primed = True


prime_vml()
