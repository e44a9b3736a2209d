"""What every forecasting model in stmgt is: an ``nn.Module`` from a :class:`Batch` to a distribution.

A model works in *scaled* units (the training split's standardisation of the target); the
training and evaluation code un-scales the returned :class:`GaussianMixture` exactly with
:meth:`GaussianMixture.affine`. Nothing in a model knows about files, the CLI, scaling or
devices.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture


@dataclass
class DataInfo:
    """What a model needs to know about the data to be built.

    Attributes:
        num_nodes: ``N``.
        in_channels: reading channels ``C`` (channel 0 is the target).
        weather_dim: covariates per step ``W`` (0: none).
        history: input steps ``T``.
        horizon: forecast steps ``H``.
        steps_per_day: time steps in a day (288 for 5-minute data).
        day_classes: the day-of-week category of each weekday (Monday first) that calendar
            embeddings use: seven when the training split covers every weekday, else
            weekday/weekend (see :func:`~stmgt.data.panel.day_classes`).
    """

    num_nodes: int
    in_channels: int = 1
    weather_dim: int = 0
    history: int = 12
    horizon: int = 12
    steps_per_day: int = 288
    day_classes: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)


class ForecastModel(nn.Module):
    """Base class: ``forward(batch, edge_index, edge_weight=None) -> GaussianMixture`` over ``[B, H, N]``
    (scaled units).

    ``edge_index [2, E]`` is the static graph (``source -> target``) and ``edge_weight [E]`` its
    optional non-negative weights (:attr:`~stmgt.data.windows.PanelData.edge_weight`, ``Run.graph()``).
    Callers always pass the weights they have; a model reads them only when its ``edge_weights``
    switch is on (``getattr(cfg, "edge_weights", False)``: Graph WaveNet, STMGT, STMamba) and uses
    unit weights when the switch is on but the data have none. Baselines ignore them.

    Class attributes:
        trainable: False for models fitted by statistics alone (they implement :meth:`fit`).
        name: registry name.
    """

    trainable: bool = True
    name: str = "model"

    def forward(self, batch: Batch, edge_index: Tensor,
                edge_weight: Tensor | None = None) -> GaussianMixture:  # pragma: no cover
        raise NotImplementedError

    def fit(self, data) -> None:
        """Fit from a :class:`~stmgt.data.windows.PanelData` without gradients (statistical models)."""


def edge_weights_switch(cfg, value: bool | None = None) -> bool:
    """Whether a model reads edge weights: ``value`` when given, else ``cfg.edge_weights`` (False when
    the config has no such field)."""
    return bool(getattr(cfg, "edge_weights", False) if value is None else value)
