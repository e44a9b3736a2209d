"""The STMGT training objective: mixture NLL plus variance and entropy regularisers."""

from __future__ import annotations

from torch import Tensor

from stmgt.distributions.mixture import GaussianMixture


def mixture_loss(dist: GaussianMixture, y: Tensor, mask: Tensor, var_reg: float = 0.01,
                 entropy_reg: float = 0.001, mae_weight: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    r"""``NLL + var_reg * (-mean log sigma) + entropy_reg * (-mean entropy(pi)) [+ mae_weight * MAE(mean)]``.

    The NLL is averaged over observed targets only (``mask`` True); the regularisers over
    every forecast, as in the original STMGT design (``docs/design.md``, "Training").

    Args:
        dist: the forecast over ``[B, H, N]`` in the units of ``y``.
        y: ``[B, H, N]`` targets (anything where unobserved).
        mask: ``[B, H, N]`` bool, observed targets.
        var_reg: weight of the variance regulariser ``-mean(log std)`` (default 0.01).
        entropy_reg: weight of the entropy regulariser ``-mean(entropy of weights)`` (default 0.001).
        mae_weight: weight of the masked MAE of the mixture mean (default 0: the design's loss). The
            NLL's pull on a mean is ``(mu - y) / sigma^2``, so the uncertain far horizon steps pull
            the shared network much less than the near ones; the MAE term pulls every step alike.

    Returns:
        ``(loss, parts)`` with ``parts`` holding ``nll``, ``var_reg`` and ``entropy_reg`` (detached).
    """
    m = mask.to(y.dtype)
    nll = -(dist.log_prob(y.masked_fill(~mask, 0.0)) * m).sum() / m.sum().clamp_min(1.0)
    v = -dist.stds.log().mean()
    e = -dist.entropy_of_weights().mean()
    loss = nll + var_reg * v + entropy_reg * e
    parts = {"nll": nll.detach(), "var_reg": v.detach(), "entropy_reg": e.detach()}
    if mae_weight > 0:
        mae = ((dist.mean - y).abs() * m).sum() / m.sum().clamp_min(1.0)
        loss = loss + mae_weight * mae
        parts["mae"] = mae.detach()
    return loss, parts
