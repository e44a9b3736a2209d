"""STMamba: STMGT with its blocks replaced by interleaved GAT -> Mamba blocks, and streaming.

Input embedding, then ``blocks`` x :class:`~stmgt.nn.blocks.stmamba_block.STMambaBlock`
(``docs/design.md``: GAT over nodes, pivot, Mamba over time, pivot back), then the same
decoder as STMGT (:class:`~stmgt.nn.blocks.decoder.ForecastDecoder`: horizon projection, weather
cross-attention, Gaussian-mixture head). Mamba: Gu and Dao, arXiv:2312.00752.

Everything before the decoder is causal in time (the GAT mixes nodes within a step, the
embedding and LayerNorms act per step, Mamba is a recurrence), so the encoder can consume a
stream one step at a time with a recurrent state per block and node: :class:`StreamingForecaster`.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.errors import DataError
from stmgt.models.base import DataInfo, ForecastModel, SpatioTemporalConfig
from stmgt.nn.blocks.decoder import ForecastDecoder
from stmgt.nn.blocks.input_embedding import InputEmbedding
from stmgt.nn.blocks.stmamba_block import STMambaBlock
from stmgt.nn.layers.mamba import MambaState

StreamState = list[MambaState]
"""Recurrent state of an :class:`STMamba` encoder: one :class:`MambaState` per block, each over
the ``B*N`` node series (row ``b*N + n``)."""


class STMambaConfig(SpatioTemporalConfig):
    """STMamba's settings (``model: {name: stmamba, ...}``): the shared spatio-temporal ones and Mamba's."""

    name: Literal["stmamba"] = "stmamba"
    d_state: int = Field(16, ge=1)
    """Mamba's state size per channel."""
    d_conv: int = Field(4, ge=1)
    """Mamba's causal depthwise convolution width."""
    expand: int = Field(2, ge=1)
    """Mamba's inner width as a multiple of ``hidden``."""
    gat_v2: bool = False
    """GATv2 in the graph phase (False: the original design's GAT)."""
    scan: Literal["auto", "compiled", "chunked", "sequential", "mambapy", "cuda"] = "auto"
    """The selective scan: "auto" runs the compiled CPU kernel on CPU tensors when it can be built here
    (g++ and ninja; built once) and the plain-PyTorch "chunked" scan otherwise."""
    node_chunk: int | None = Field(None, ge=1)
    """Run the Mamba phase over chunks of this many node sequences (bounds memory)."""
    graph_chunk: int | None = Field(None, ge=1)
    """Run the graph phase over chunks of this many (sample, step) graphs, recomputed in backward."""


class STMamba(ForecastModel):
    """STMamba: embedding, ``blocks`` x STMambaBlock (GAT over nodes, Mamba over time), STMGT's decoder.

    Args:
        cfg: :class:`STMambaConfig`: as STMGT's shared settings (hidden 96, blocks 3, heads 4, mixtures 5,
            dropout 0.2, drop_edge 0.05, weather "cross", calendar on) plus the Mamba options
            ``d_state`` (16), ``d_conv`` (4), ``expand`` (2), ``gat_v2`` (False: the original design's GAT),
            ``scan`` ("auto"), ``node_chunk`` and ``graph_chunk`` (None). ``spatial=False`` drops the GAT
            phase. There is no ``window_embedding``: the encoder reads its history one step at a time.
        info: :class:`~stmgt.models.base.DataInfo` (nodes, channels, weather size, history, horizon).

    Shapes: ``batch.x [B, T', N, C]`` with ``T' >= info.history``, ``edge_index [2, E]``,
    ``edge_weight [E]`` or None ->
    :class:`GaussianMixture` with batch shape ``[B, H, N]`` in scaled units. With ``T' = history``
    this is the usual windowed forecast; a longer history runs the (causal) encoder over all
    ``T'`` steps and decodes its last ``history`` outputs, which is what streaming computes.
    With ``keep_details = True`` the last forward keeps in ``details``: ``"spatial_attention"``, each
    block's ``(edge_index_with_loops, alpha [B, T, E', heads])`` (None without the spatial phase), and
    ``"weather_attention"``, the decoder's (see :class:`~stmgt.nn.blocks.decoder.ForecastDecoder`).

    Streaming: :meth:`init_state`, :meth:`encode_step`, :meth:`decode`; see :class:`StreamingForecaster`
    and :meth:`stream_forecast`.
    """

    name = "stmamba"
    Config = STMambaConfig
    paper: str = "STMamba: GAT over roads, then a Mamba selective scan over time (Gu and Dao, arXiv:2312.00752)"

    def __init__(self, cfg: STMambaConfig, info: DataInfo):
        super().__init__()
        self.cfg, self.info = cfg, info
        self.edge_weights = cfg.edge_weights  # the GAT phase with edge_dim=1
        self.embedding = InputEmbedding.from_config(cfg, info)
        self.blocks = nn.ModuleList(
            STMambaBlock(cfg.hidden, cfg.heads, cfg.dropout, cfg.drop_edge, d_state=cfg.d_state,
                         d_conv=cfg.d_conv, expand=cfg.expand, gat_v2=cfg.gat_v2, scan=cfg.scan,
                         node_chunk=cfg.node_chunk, spatial=cfg.spatial,
                         graph_chunk=cfg.graph_chunk, edge_dim=1 if self.edge_weights else None)
            for _ in range(cfg.blocks)
        )
        self.decoder = ForecastDecoder(cfg, info)
        self.keep_details = False
        self.details: dict = {}

    # ------------------------------------------------------------------ windowed
    def encode(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None,
               state: StreamState | None = None, return_state: bool = False):
        """Embedding and blocks over every history step: ``batch.x [B, T', N, C]`` -> ``h [B, T', N, D]``,
        continuing from ``state`` (zeros when None); with ``return_state`` also the state after the
        last step. ``edge_weight [E]`` is read only with ``edge_weights`` on."""
        ew = edge_weight if self.edge_weights else None
        T = batch.x.shape[1]
        h = self.embedding(batch.x, batch.x_mask, batch.tod[:, :T], batch.dow[:, :T])  # [B, T', N, D]
        new_state, atts = [], []
        for i, block in enumerate(self.blocks):
            out = block(h, edge_index, ew, return_attention=self.keep_details,
                        state=None if state is None else state[i], return_state=True)
            h, st = (out[0], out[2]) if self.keep_details else out
            if self.keep_details:
                atts.append(out[1])
            new_state.append(st)
        if self.keep_details:
            self.details = {"spatial_attention": atts}
        return (h, new_state) if return_state else h

    def decode(self, h: Tensor, batch: Batch) -> GaussianMixture:
        """The last ``history`` encoder outputs ``h [B, T', N, D]`` (``T' >= history``) and the batch's
        weather -> the forecast over ``[B, H, N]``."""
        T, Tp = self.info.history, h.shape[1]
        if Tp < T:
            raise DataError(f"STMamba was built for a history of {T} steps but got {Tp};"
                            f" give at least {T} steps")
        if Tp > T:
            batch = _last_steps(batch, T)
            h = h[:, Tp - T:]  # [B, T, N, D]
        if not self.keep_details:
            return self.decoder(h, batch)
        dist, self.details["weather_attention"] = self.decoder(h, batch, return_attention=True)
        return dist

    def prepare(self, data) -> None:
        """The decoder's training-split statistics (the weekly profile of ``anchor_seasonal``)."""
        self.decoder.prepare(data)

    def forward(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None) -> GaussianMixture:
        return self.decode(self.encode(batch, edge_index, edge_weight), batch)

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch_size: int, num_nodes: int | None = None, device=None,
                   dtype=None) -> StreamState:
        """Zero state of every block for ``batch_size`` streams of ``num_nodes`` nodes (default: data's)."""
        N = self.info.num_nodes if num_nodes is None else num_nodes
        p = next(self.parameters())
        device, dtype = device or p.device, dtype or p.dtype
        return [b.init_state(batch_size, N, device=device, dtype=dtype) for b in self.blocks]

    def encode_step(self, x_t: Tensor, x_mask_t: Tensor, tod_t: Tensor, dow_t: Tensor, edge_index: Tensor,
                    state: StreamState, edge_weight: Tensor | None = None) -> tuple[Tensor, StreamState]:
        """One new step through the encoder: ``x_t [B, N, C]``, ``x_mask_t [B, N]``, ``tod_t, dow_t [B]``
        (``edge_weight [E]``, read only with ``edge_weights`` on) -> ``h_t [B, N, D]`` (the last block's
        output) and the new state. In eval mode, stepping through ``T'`` steps from :meth:`init_state`
        gives :meth:`encode` on those steps, step by step."""
        ew = edge_weight if self.edge_weights else None
        h = self.embedding(x_t[:, None], x_mask_t[:, None], tod_t[:, None], dow_t[:, None])[:, 0]  # [B, N, D]
        new_state = []
        for block, st in zip(self.blocks, state):
            h, st = block.step(h, edge_index, st, ew)
            new_state.append(st)
        return h, new_state

    def stream_forecast(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None) -> GaussianMixture:
        """Forecast by feeding the history steps of ``batch`` one at a time through a fresh
        :class:`StreamingForecaster`; equals ``forward(batch, edge_index, edge_weight)`` (in eval mode)."""
        s = StreamingForecaster(self, edge_index, batch_size=batch.x.shape[0], edge_weight=edge_weight)
        T = batch.x.shape[1]
        for t in range(T):
            s.update(batch.x[:, t], batch.x_mask[:, t], batch.tod[:, t], batch.dow[:, t],
                     None if batch.weather is None else batch.weather[:, t])
        future_weather = None if batch.weather is None else batch.weather[:, T:]
        return s.forecast(batch.tod[:, T:], batch.dow[:, T:], future_weather)


def _last_steps(batch: Batch, T: int) -> Batch:
    """The batch restricted to its last ``T`` history steps (horizon unchanged)."""
    Tp = batch.x.shape[1]
    cut = Tp - T
    return Batch(x=batch.x[:, cut:], x_mask=batch.x_mask[:, cut:], y=batch.y, y_mask=batch.y_mask,
                 tod=batch.tod[:, cut:], dow=batch.dow[:, cut:],
                 weather=None if batch.weather is None else batch.weather[:, cut:], start=batch.start + cut)


class StreamingForecaster:
    """Forecasts from a stream of readings, one new time step at a time, with STMamba's recurrent state.

    Keeps, per block and node, the Mamba state (:meth:`STMamba.init_state`), and the last
    ``history`` encoder outputs and weather steps. Each :meth:`update` costs one step of every
    block (``O(1)`` in the length of the stream); :meth:`forecast` runs the decoder.

    What it equals, precisely: after :meth:`update` with steps ``1..t`` from a fresh state
    (``t >= history``), :meth:`forecast` equals ``model(batch, edge_index)`` where ``batch`` holds
    those ``t`` steps as its history (and the given horizon calendar/weather) -- the encoder runs
    over all ``t`` steps and the decoder sees its last ``history`` outputs. For ``t = history``
    this is exactly the windowed forward the model was trained on. For ``t > history`` the Mamba
    states carry context from before the last window, so the forecast is *not* the windowed
    forward on steps ``t-history+1..t``; to get that, :meth:`reset` and feed the window. Equality
    holds in eval mode (dropout and DropEdge off) up to float rounding (tested to 1e-5).

    Args:
        model: a trained :class:`STMamba` (put in eval mode here).
        edge_index: ``[2, E]`` graph of the ``N`` nodes.
        batch_size: independent streams ``B`` (default 1).
        num_nodes: ``N`` (default: the model's).
        edge_weight: ``[E]`` weights of ``edge_index`` or None (default); read only when the model's
            ``edge_weights`` switch is on.

    Shapes: :meth:`update` takes ``x_t [B, N, C]``, ``x_mask_t [B, N]``, ``tod_t, dow_t [B]``,
    ``weather_t [B, W]`` (or None); :meth:`forecast` takes the horizon's ``tod, dow [B, H]`` and
    ``weather [B, H, W]`` (needed only with ``weather_forecast``) and returns a
    :class:`GaussianMixture` over ``[B, H, N]``.
    """

    def __init__(self, model: STMamba, edge_index: Tensor, batch_size: int = 1, num_nodes: int | None = None,
                 edge_weight: Tensor | None = None):
        self.model = model.eval()
        self.edge_index, self.edge_weight = edge_index, edge_weight
        self.batch_size = batch_size
        self.num_nodes = model.info.num_nodes if num_nodes is None else num_nodes
        self.reset()

    def reset(self) -> None:
        """Forget the stream: zero states, empty buffers."""
        T = self.model.info.history
        self.state = self.model.init_state(self.batch_size, self.num_nodes)
        # the last T steps: encoder output [B, N, D] and the inputs (x [B, N, C], mask [B, N],
        # tod [B], dow [B], weather [B, W] or None), from which the decoder's batch is rebuilt
        self.window: deque[tuple] = deque(maxlen=T)
        self.steps = 0

    @torch.no_grad()
    def update(self, x_t: Tensor, x_mask_t: Tensor, tod_t: Tensor, dow_t: Tensor,
               weather_t: Tensor | None = None) -> None:
        """Consume one new time step of every stream."""
        h, self.state = self.model.encode_step(x_t, x_mask_t, tod_t, dow_t, self.edge_index, self.state,
                                               self.edge_weight)
        self.window.append((h, x_t, x_mask_t, tod_t, dow_t, weather_t))
        self.steps += 1

    @torch.no_grad()
    def forecast(self, tod: Tensor, dow: Tensor, weather: Tensor | None = None) -> GaussianMixture:
        """Forecast of the next ``H`` steps from what was consumed (at least ``history`` steps)."""
        info = self.model.info
        T, H, B, N = info.history, info.horizon, self.batch_size, self.num_nodes
        if self.steps < T:
            raise DataError(f"the stream has {self.steps} steps; STMamba needs {T} (its history) to forecast")
        h, x, x_mask, tod_h, dow_h, w_h = zip(*self.window)
        hist = torch.stack(h, 1)  # T x [B, N, D] -> [B, T, N, D]
        w = None
        if any(v is not None for v in w_h):
            if any(v is None for v in w_h):
                raise DataError("give weather_t to every update() of a stream, or to none")
            if weather is None:
                if self.model.cfg.weather_forecast and self.model.decoder.weather_mode != "none":
                    raise DataError("this model reads the horizon's weather (weather_forecast): "
                                    "give it to forecast(weather=...)")
                weather = w_h[-1].new_zeros(B, H, w_h[-1].shape[-1])  # never read
            w = torch.cat([torch.stack(w_h, 1), weather], 1)  # [B, T + H, W]
        elif self.model.decoder.weather_mode != "none":
            raise DataError("this model uses weather: give weather_t to every update()")
        dev = hist.device
        batch = Batch(x=torch.stack(x, 1), x_mask=torch.stack(x_mask, 1),  # [B, T, N, C], [B, T, N]
                      y=hist.new_zeros(B, H, N), y_mask=torch.zeros(B, H, N, dtype=torch.bool, device=dev),
                      tod=torch.cat([torch.stack(tod_h, 1), tod], 1),  # [B, T + H]
                      dow=torch.cat([torch.stack(dow_h, 1), dow], 1),
                      weather=w, start=torch.zeros(B, dtype=torch.long, device=dev))
        return self.model.decode(hist, batch)
