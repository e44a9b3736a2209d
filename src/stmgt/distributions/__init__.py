"""Probability distributions: the :class:`GaussianMixture` every model forecasts."""

from stmgt.distributions.mixture import GaussianMixture

__all__ = ["GaussianMixture"]
