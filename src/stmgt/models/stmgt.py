"""STMGT: Spatio-Temporal Multi-modal Graph Transformer with a Gaussian-mixture output.

The original STMGT design with the departures listed in ``docs/design.md``: input embedding;
``blocks`` x (GATv2 over nodes || Transformer over time, gated); a learned projection from
history to horizon steps; weather cross-attention over weather tokens; a K-component
Gaussian-mixture head.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.models.base import DataInfo, ForecastModel, SpatioTemporalConfig
from stmgt.nn.blocks.decoder import ForecastDecoder
from stmgt.nn.blocks.input_embedding import InputEmbedding
from stmgt.nn.blocks.st_block import STBlock


class STMGTConfig(SpatioTemporalConfig):
    """STMGT's settings (``model: {name: stmgt, ...}``): the shared spatio-temporal ones and these."""

    name: Literal["stmgt"] = "stmgt"
    window_embedding: bool = False
    """Add to every step a linear embedding of the road's whole history window (STID's series embedding)."""
    decoder: Literal["projection", "flat"] = "flat"
    """From history to horizon steps. STMGT's default is ``flat`` (each horizon step read out of the road's whole
    flattened history, STAEformer's output layer), which validation prefers on Los-loop at the design size
    (``benchmarks/results/los_loop_ablation.md``: 2.866 vs 2.887 mph, 3.21 vs 3.36 at 60 minutes);
    ``projection`` is the shared mix of history steps (STMamba's default)."""
    spatial_blocks: int | None = Field(None, ge=0)
    """Give only the first this many blocks the spatial branch (the others are the temporal branch alone,
    with no gate): a reading then reaches roads at most this many hops away (None: every block)."""
    adaptive_embedding: bool = False
    """Add a learned vector per (history step, road) to the input embedding: STAEformer's spatio-temporal
    adaptive embedding (Liu et al., CIKM 2023)."""
    fused_attention: bool = True
    """GATv2's edge operations in compiled CPU kernels (:mod:`stmgt.kernels`): the same numbers with
    only node-level features kept (3.5x faster graph attention at 207 roads; False: plain PyTorch)."""
    fused_ffn: bool = True
    """The temporal feed-forward's GELU and dropout in one compiled CPU pass, its dropout mask a hash of a
    seed (:class:`~stmgt.nn.layers.gelu_dropout.GeluDropout`): the same operation, other random masks, one
    pass over the block's largest tensor instead of five (False: ``nn.GELU`` and a separate dropout)."""
    checkpoint: bool = False
    """Recompute each block's activations in the backward pass (less memory, ~1/3 more time): large graphs."""
    recompute_ffn: bool = False
    """Recompute only the temporal feed-forward's hidden activations in the backward pass: the same
    numbers, ~0.5 GB less held at 207 roads and batch 32, for a few percent more time (see
    ``benchmarks/results/time_to_accuracy.md``)."""
    checkpoint_chunk: int | None = Field(None, ge=1)
    """With ``checkpoint``: run each block over chunks of this many samples (bounds memory on huge graphs)."""


class STMGT(ForecastModel):
    """STMGT (``docs/design.md``): see the module docstring.

    Args:
        cfg: :class:`STMGTConfig` (hidden 96, blocks 3, heads 4, mixtures 5, dropout 0.2,
            drop_edge 0.05, weather "cross", calendar on by default; ``stmgt models stmgt`` lists all).
        info: :class:`~stmgt.models.base.DataInfo` (nodes, channels, weather size, history, horizon).

    Shapes: ``batch.x [B, T, N, C]``, ``edge_index [2, E]``, ``edge_weight [E]`` or None ->
    :class:`GaussianMixture` with batch shape ``[B, H, N]`` in scaled units. With ``keep_details = True``
    the last forward keeps in ``details``: ``"gate"``, the fusion gate of each block (``[B, T, N, D]``);
    ``"spatial_attention"``, each block's ``(edge_index_with_loops, alpha [B*T, E', heads])``;
    ``"weather_attention"``, the decoder's (see :class:`~stmgt.nn.blocks.decoder.ForecastDecoder`).
    """

    name = "stmgt"
    Config = STMGTConfig
    paper: str = "STMGT: GATv2 over roads in parallel with a Transformer over time, gated (docs/design.md)"

    def __init__(self, cfg: STMGTConfig, info: DataInfo):
        super().__init__()
        self.cfg, self.info = cfg, info
        self.edge_weights = cfg.edge_weights  # GATv2 with edge_dim=1 (the fused kernels are then not used)
        self.embedding = InputEmbedding.from_config(cfg, info)
        self.blocks = nn.ModuleList(
            STBlock(cfg.hidden, cfg.heads, cfg.dropout, cfg.drop_edge,
                    cfg.spatial and (cfg.spatial_blocks is None or i < cfg.spatial_blocks), cfg.fused_attention,
                    edge_dim=1 if self.edge_weights else None, recompute_ffn=cfg.recompute_ffn,
                    fused_ffn=cfg.fused_ffn)
            for i in range(cfg.blocks)
        )
        self.decoder = ForecastDecoder(cfg, info)
        self.keep_details = False
        self.details: dict = {}

    def prepare(self, data) -> None:
        """The decoder's training-split statistics (the weekly profile of ``anchor_seasonal``)."""
        self.decoder.prepare(data)

    def forward(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None) -> GaussianMixture:
        T = batch.x.shape[1]
        ew = edge_weight if self.edge_weights else None
        h = self.embedding(batch.x, batch.x_mask, batch.tod[:, :T], batch.dow[:, :T])  # [B, T, N, D]
        gates, atts = [], []
        for block in self.blocks:
            if self.cfg.checkpoint and self.training and torch.is_grad_enabled():
                # the same numbers (the RNG state is replayed), activations recomputed in backward;
                # samples are independent inside a block, so it can also run over chunks of the batch
                c = self.cfg.checkpoint_chunk or h.shape[0]
                parts = [checkpoint(block, h[i:i + c], edge_index, ew, self.keep_details, use_reentrant=False)
                         for i in range(0, h.shape[0], c)]
                out = _join_chunks(parts) if self.keep_details else torch.cat(parts)
            else:
                out = block(h, edge_index, ew, return_attention=self.keep_details)
            if self.keep_details:
                h, (gate, att) = out
                gates.append(gate)
                atts.append(att)
            else:
                h = out
        if not self.keep_details:
            return self.decoder(h, batch)
        dist, weather_att = self.decoder(h, batch, return_attention=True)
        self.details = {"gate": gates, "spatial_attention": atts, "weather_attention": weather_att}
        return dist


def _join_chunks(parts: list) -> tuple:
    """Outputs ``(h, (gate, attention))`` of one block over chunks of the batch, joined as one call's;
    the spatial attention is kept only when there was one chunk."""
    h = torch.cat([p[0] for p in parts])
    gate = None if parts[0][1][0] is None else torch.cat([p[1][0] for p in parts])
    att = parts[0][1][1] if len(parts) == 1 else None
    return h, (gate, att)
