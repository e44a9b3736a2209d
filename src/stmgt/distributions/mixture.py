"""A Gaussian mixture over every (window, horizon step, node): what every model returns.

:class:`GaussianMixture` is a ``torch.distributions.Distribution`` with exact quantiles
(vectorised bisection on the monotone mixture CDF), the closed-form CRPS of a Gaussian
mixture (Grimit et al., QJRMS 2006), exact affine maps (for un-scaling), and sampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, constraints

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _phi(z: Tensor) -> Tensor:
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _Phi(z: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(z / _SQRT2))


def _gauss_abs_mean(mu: Tensor, var: Tensor) -> Tensor:
    """E|X| for X ~ N(mu, var): ``mu (2 Phi(mu/s) - 1) + 2 s phi(mu/s)``."""
    s = var.sqrt()
    z = mu / s
    return mu * (2 * _Phi(z) - 1) + 2 * s * _phi(z)


class GaussianMixture(Distribution):
    r"""A mixture of ``K`` univariate Gaussians, batched over any leading shape.

    .. math:: p(y) = \sum_{k=1}^K \pi_k\, \mathcal N(y;\ \mu_k, \sigma_k^2)

    Args:
        means: ``[..., K]`` component means.
        stds: ``[..., K]`` component standard deviations (positive).
        logits: ``[..., K]`` unnormalised log mixture weights (``weights = softmax(logits)``).

    The batch shape is ``means.shape[:-1]``, e.g. ``[B, H, N]`` for a forecast. ``mean`` is
    the point forecast used for MAE/RMSE/MAPE.
    """

    arg_constraints = {"means": constraints.real, "stds": constraints.positive}
    support = constraints.real
    has_rsample = False

    def __init__(self, means: Tensor, stds: Tensor, logits: Tensor, validate_args: bool | None = False):
        if not (means.shape == stds.shape == logits.shape):
            raise ValueError(f"means {means.shape}, stds {stds.shape}, logits {logits.shape} must match")
        self.means, self.stds = means, stds
        self.log_weights = F.log_softmax(logits, dim=-1)
        super().__init__(batch_shape=means.shape[:-1], validate_args=validate_args)

    # ------------------------------------------------------------------ basics
    @property
    def num_components(self) -> int:
        return self.means.shape[-1]

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    @property
    def mean(self) -> Tensor:
        return (self.weights * self.means).sum(-1)

    @property
    def variance(self) -> Tensor:
        w = self.weights
        m = (w * self.means).sum(-1, keepdim=True)
        return (w * (self.stds**2 + (self.means - m) ** 2)).sum(-1)

    @property
    def stddev(self) -> Tensor:
        return self.variance.sqrt()

    def component_log_prob(self, value: Tensor) -> Tensor:
        """``log pi_k + log N(value; mu_k, sigma_k)`` per component, ``[..., K]``."""
        z = (value.unsqueeze(-1) - self.means) / self.stds
        return self.log_weights - 0.5 * z * z - self.stds.log() - _LOG_SQRT_2PI

    def log_prob(self, value: Tensor) -> Tensor:
        return torch.logsumexp(self.component_log_prob(value), dim=-1)

    def cdf(self, value: Tensor) -> Tensor:
        z = (value.unsqueeze(-1) - self.means) / self.stds
        return (self.weights * _Phi(z)).sum(-1)

    def entropy_of_weights(self) -> Tensor:
        """Entropy of the mixture weights ``-sum pi log pi``, ``[...]``."""
        return -(self.weights * self.log_weights).sum(-1)

    # ------------------------------------------------------------------ quantiles, CRPS
    @torch.no_grad()
    def icdf(self, q: float | Tensor, halvings: int = 16, newton: int = 6) -> Tensor:
        """Exact quantile(s): bisection on the CDF narrows a bracket, then Newton steps kept inside it.

        ``q`` a float gives ``[...]``; a 1-D tensor of ``Q`` levels gives ``[..., Q]``.
        The bracket ``[min mu - 12 max sigma, max mu + 12 max sigma]`` contains every quantile
        in ``[1e-30, 1 - 1e-30]``; ``halvings`` bisections shrink it 65,536-fold, then each Newton
        step ``x - (F(x) - q) / f(x)`` converges quadratically (float64 resolution in three or
        four). A step that would leave the current bracket (a flat tail, a density of 0) is
        replaced by a bisection, and every CDF evaluation also shrinks the bracket, so the answer
        is never worse than ``halvings + newton`` bisections. Computed in float64.
        """
        scalar = not torch.is_tensor(q) or q.dim() == 0
        levels = torch.as_tensor(q, dtype=torch.float64, device=self.means.device).reshape(-1)
        if ((levels <= 0) | (levels >= 1)).any():
            raise ValueError("quantile levels must lie strictly between 0 and 1")
        mu, sd, w = self.means.double(), self.stds.double(), self.weights.double()
        lo = (mu.min(-1).values - 12 * sd.max(-1).values).unsqueeze(-1)  # [..., 1]
        hi = (mu.max(-1).values + 12 * sd.max(-1).values).unsqueeze(-1)
        lo = lo.expand(*lo.shape[:-1], levels.numel()).clone()  # [..., Q]
        hi = hi.expand_as(lo).clone()
        mu, sd, w = mu.unsqueeze(-2), sd.unsqueeze(-2), w.unsqueeze(-2)  # [..., 1, K]
        for _ in range(halvings):
            mid = 0.5 * (lo + hi)
            c = (w * _Phi((mid.unsqueeze(-1) - mu) / sd)).sum(-1)  # [..., Q]
            below = c < levels
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        x = 0.5 * (lo + hi)
        for _ in range(newton):
            z = (x.unsqueeze(-1) - mu) / sd  # [..., Q, K]
            c = (w * _Phi(z)).sum(-1)  # F(x)
            f = (w * _phi(z) / sd).sum(-1)  # F'(x)
            below = c < levels
            lo = torch.where(below, x, lo)
            hi = torch.where(below, hi, x)
            step = x - (c - levels) / f
            inside = (step >= lo) & (step <= hi)  # False for NaN/inf too
            x = torch.where(inside, step, 0.5 * (lo + hi))
        out = x.to(self.means.dtype)
        return out[..., 0] if scalar else out

    quantile = icdf

    def interval(self, level: float) -> tuple[Tensor, Tensor]:
        """Central prediction interval of probability ``level`` (e.g. 0.8): ``(lower, upper)``."""
        a = (1 - level) / 2
        qs = self.icdf(torch.tensor([a, 1 - a]))
        return qs[..., 0], qs[..., 1]

    def crps(self, value: Tensor) -> Tensor:
        r"""Closed-form CRPS of the mixture at ``value``, ``[...]``.

        .. math:: \mathrm{CRPS} = \sum_k \pi_k A(y-\mu_k, \sigma_k^2)
            - \tfrac12 \sum_{k,l} \pi_k \pi_l A(\mu_k-\mu_l, \sigma_k^2+\sigma_l^2),
            \quad A(\mu, s^2) = \mathbb E|X|,\ X \sim \mathcal N(\mu, s^2)
        """
        w, mu, var = self.weights, self.means, self.stds**2
        t1 = (w * _gauss_abs_mean(value.unsqueeze(-1) - mu, var)).sum(-1)
        ww = w.unsqueeze(-1) * w.unsqueeze(-2)  # [..., K, K]
        dmu = mu.unsqueeze(-1) - mu.unsqueeze(-2)
        svar = var.unsqueeze(-1) + var.unsqueeze(-2)
        t2 = (ww * _gauss_abs_mean(dmu, svar)).sum((-1, -2))
        return t1 - 0.5 * t2

    # ------------------------------------------------------------------ transforms, sampling
    def affine(self, loc: float | Tensor, scale: float | Tensor) -> GaussianMixture:
        """The distribution of ``loc + scale * Y`` (``scale > 0``): exact, used to un-scale forecasts."""
        return GaussianMixture(self.means * scale + loc, self.stds * scale, self.log_weights)

    def scale_spread(self, factor: Tensor | float) -> GaussianMixture:
        """Widen (``factor > 1``) or narrow the distribution about its mean by ``factor``.

        Every component moves ``mu_k -> m + factor (mu_k - m)`` and ``sigma_k -> factor sigma_k``,
        so the mean is unchanged and every quantile's distance from the mean scales by ``factor``.
        """
        m = self.mean.unsqueeze(-1)
        f = torch.as_tensor(factor, dtype=self.means.dtype, device=self.means.device)
        if f.dim() > 0:
            f = f.unsqueeze(-1)
        return GaussianMixture(m + f * (self.means - m), self.stds * f, self.log_weights)

    def detach(self) -> GaussianMixture:
        return GaussianMixture(self.means.detach(), self.stds.detach(), self.log_weights.detach())

    def index(self, idx) -> GaussianMixture:
        """The mixture at batch index ``idx`` (anything tensor indexing accepts, over batch dims)."""
        return GaussianMixture(self.means[idx], self.stds[idx], self.log_weights[idx])

    @staticmethod
    def cat(parts: list[GaussianMixture], dim: int = 0) -> GaussianMixture:
        if dim < 0:
            raise ValueError("use a non-negative batch dimension")
        return GaussianMixture(
            torch.cat([p.means for p in parts], dim),
            torch.cat([p.stds for p in parts], dim),
            torch.cat([p.log_weights for p in parts], dim),
        )

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | tuple = ()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        k = torch.distributions.Categorical(logits=self.log_weights).sample(sample_shape)  # [S, ...]
        mu = self.means.expand(*shape, self.num_components).gather(-1, k.unsqueeze(-1)).squeeze(-1)
        sd = self.stds.expand(*shape, self.num_components).gather(-1, k.unsqueeze(-1)).squeeze(-1)
        return mu + sd * torch.randn_like(mu)

    @classmethod
    def gaussian(cls, mean: Tensor, std: Tensor) -> GaussianMixture:
        """A single Gaussian (``K = 1``) as a mixture, used by point-forecast baselines."""
        return cls(mean.unsqueeze(-1), std.expand_as(mean).unsqueeze(-1), torch.zeros_like(mean).unsqueeze(-1))

    def __repr__(self) -> str:
        return f"GaussianMixture(batch_shape={tuple(self.batch_shape)}, K={self.num_components})"
