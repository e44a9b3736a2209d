"""What every forecasting model in stmgt is: an ``nn.Module`` from a :class:`Batch` to a distribution.

A model works in *scaled* units (the training split's standardisation of the target); the
training and evaluation code un-scales the returned :class:`GaussianMixture` exactly with
:meth:`GaussianMixture.affine`. Nothing in a model knows about files, the CLI, scaling or
devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator
from torch import Tensor, nn

from stmgt.config import ModelConfig, NeuralModelConfig
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


class SpatioTemporalConfig(NeuralModelConfig):
    """Settings STMGT and STMamba share: their blocks' sizes, the input embedding and the forecast decoder."""

    blocks: int = Field(3, ge=1)
    """Spatio-temporal blocks."""
    heads: int = Field(4, ge=1)
    """Attention heads (``hidden`` must be divisible by it)."""
    drop_edge: float = Field(0.05, ge=0, lt=1)
    """DropEdge probability of the graph attention during training."""
    spatial: bool = True
    """Graph attention over roads on (False: an ablation without the graph)."""
    edge_weights: bool = False
    """Give the graph attention each edge's weight as an edge feature (GATv2 with ``edge_dim=1``)."""
    weather: Literal["cross", "document", "none"] = "cross"
    """Weather block: our cross-attention over weather tokens, the original design's degenerate form
    (``document``; see ``docs/design.md``, departure 1), or none."""
    weather_forecast: bool = False
    """Let the weather block see the horizon's weather (a weather forecast; the panel's values)."""
    calendar: bool = True
    """Time-of-day and day-of-week embeddings in the input embedding."""
    node_embedding: bool = False
    """A learned per-node embedding in the input embedding."""
    input_norm: bool = True
    """LayerNorm over the input embedding (the original design's). A LayerNorm of a linear map of one
    reading saturates: large and very large readings map to nearly the same token. False keeps the
    reading's scale in the token, as STID and STAEformer do."""
    decoder: Literal["projection", "flat"] = "projection"
    """From history to horizon steps: ``projection``, one learned weight per (horizon, history) step
    shared by all features; ``flat``, each horizon step regressed from the node's whole flattened
    history (STAEformer's output layer)."""
    horizon_calendar: bool = False
    """Give each forecast step its own time of day, day of week and the road's identity before the
    head (:class:`~stmgt.nn.blocks.horizon_calendar.HorizonCalendar`)."""
    anchor_last: bool = True
    """Mixture means are offsets from each node's last observed reading (False: the original design's head)."""
    anchor_seasonal: bool = False
    """Mixture means are offsets from a learned blend, per horizon step and road, of the last reading and the
    road's weekly profile at the forecast step (the training mean at its day of week and time of day):
    periodic flows are anchored on what the clock says, trends on the last reading."""

    @model_validator(mode="after")
    def _heads(self):
        if self.hidden % self.heads:
            raise ValueError(f"model.hidden ({self.hidden}) must be divisible by model.heads ({self.heads})")
        return self


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
        name: registry name (:mod:`stmgt.registry`).
        Config: the model's settings, a :class:`~stmgt.config.ModelConfig` subclass whose ``name`` is
            ``Literal[name]``; the constructor takes ``(cfg: Config, info: DataInfo)``.
        paper: the work the model comes from, one line (shown by ``stmgt models``).
    """

    trainable: bool = True
    name: str = "model"
    Config: type[ModelConfig] = ModelConfig
    paper: str = ""

    def forward(self, batch: Batch, edge_index: Tensor,
                edge_weight: Tensor | None = None) -> GaussianMixture:  # pragma: no cover
        raise NotImplementedError

    def fit(self, data) -> None:
        """Fit from a :class:`~stmgt.data.windows.PanelData` without gradients (statistical models)."""

    def prepare(self, data) -> None:
        """Set the statistics of the training split a trainable model keeps as buffers (e.g. a seasonal
        profile), before training; called by :func:`~stmgt.training.fit.fit` (default: nothing)."""
