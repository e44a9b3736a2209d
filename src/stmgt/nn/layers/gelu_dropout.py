"""GELU followed by dropout in one compiled pass: the hidden layer of a Transformer feed-forward.

``nn.GELU()`` then :class:`~stmgt.nn.layers.dropout.FastDropout` make five passes over the feed-forward's
hidden activations (``[B*N, T, 4D]``, the largest tensor of an STMGT block): the GELU, the random
bits, their comparison into a mask, the mask's cast, the multiply; and they keep the mask for the
backward pass. :class:`GeluDropout` does the same operation in one pass forward and one backward
(:mod:`stmgt.kernels`, ``gelu_dropout.cpp``): each element is kept when a hash of a seed and the
element's index clears ``p`` (exact to ``2^-32``), so only the seed is stored and the mask is
recomputed in backward. The seed is drawn from torch's default generator, so ``torch.manual_seed``
fixes the masks and activation checkpointing replays them. Off the CPU, in evaluation, and with
``p = 0`` it is exactly ``F.gelu`` followed by ``F.dropout``; where the kernel cannot be built (no C++
compiler) it warns once and uses them.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stmgt.nn.layers.dropout import fast_dropout


@lru_cache(maxsize=1)
def fused_kernel_available() -> bool:
    """Whether the compiled GELU-dropout kernel can be used here (built once; a warning if not)."""
    import stmgt.kernels as kernels

    return kernels.usable(kernels.gelu_dropout_extension, "PyTorch's GELU and dropout")


class _GeluDropout(torch.autograd.Function):
    """``GELU(x) * keep / (1 - p)`` with ``keep`` a hash of ``(seed, index)`` (compiled kernel)."""

    @staticmethod
    def forward(ctx, x, p, seed):
        from stmgt.kernels import gelu_dropout_extension

        x = x.contiguous()
        ctx.save_for_backward(x)
        ctx.p, ctx.seed = p, seed
        return gelu_dropout_extension().forward(x, p, seed)

    @staticmethod
    def backward(ctx, grad):
        from stmgt.kernels import gelu_dropout_extension

        (x,) = ctx.saved_tensors
        return gelu_dropout_extension().backward(grad.contiguous(), x, ctx.p, ctx.seed), None, None


def gelu_dropout(x: Tensor, p: float, training: bool = True, fused: bool = True) -> Tensor:
    """``dropout(GELU(x), p)``: exact GELU (erf form), each element zeroed with probability ``p`` and the
    others scaled by ``1 / (1 - p)``; one compiled pass on the CPU in training when ``fused``."""
    if not training or p <= 0:
        return F.gelu(x)
    if (fused and x.device.type == "cpu" and p < 1 and x.dtype in (torch.float32, torch.float64, torch.bfloat16)
            and fused_kernel_available()):
        seed = int(torch.randint(0, 2**62, (1,)).item())  # from the default generator: seeded and replayable
        return _GeluDropout.apply(x, p, seed)
    return fast_dropout(F.gelu(x), p, training)


class GeluDropout(nn.Module):
    """``nn.Sequential(nn.GELU(), nn.Dropout(p))`` as one layer (see the module docstring).

    Args:
        p: probability of zeroing an element (default 0.5), in ``[0, 1]``.
        fused: use the compiled CPU kernel in training (default True; False: ``nn.GELU`` and
            :class:`~stmgt.nn.layers.dropout.FastDropout`).

    Shapes: any -> the same.
    """

    def __init__(self, p: float = 0.5, fused: bool = True):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p, self.fused = p, fused

    def forward(self, x: Tensor) -> Tensor:
        return gelu_dropout(x, self.p, self.training, self.fused)

    def extra_repr(self) -> str:
        return f"p={self.p}, fused={self.fused}"
