"""One STMGT block: spatial (GATv2) and temporal (Transformer) branches in parallel, gated."""

from __future__ import annotations

from torch import Tensor, nn

from stmgt.nn.blocks.gated_fusion import GatedFusion
from stmgt.nn.blocks.spatial_branch import SpatialBranch
from stmgt.nn.blocks.temporal_branch import TemporalBranch


class STBlock(nn.Module):
    """``GatedFusion(SpatialBranch(x), TemporalBranch(x))``.

    Args:
        hidden: feature size ``D`` (default 96).
        heads: attention heads of both branches (default 4).
        dropout: dropout (default 0.2).
        drop_edge: DropEdge probability of the spatial branch (default 0.05).
        spatial: with False the spatial branch is switched off and the block is the temporal
            branch alone (an ablation: "does the graph help?").
        fused: GATv2's edge operations in the compiled CPU kernels (default True; not used with
            ``edge_dim``).
        recompute_ffn: recompute the temporal feed-forward's hidden activations in backward
            (default False; see :class:`~stmgt.nn.blocks.temporal_branch.TemporalBranch`).
        fused_ffn: the temporal feed-forward's GELU and dropout in one compiled CPU pass (default True;
            see :class:`~stmgt.nn.blocks.temporal_branch.TemporalBranch`).
        edge_dim: edge attribute size of the spatial attention, or None (default): no edge
            features. ``edge_dim=1`` reads the graph's edge weights.

    Shapes: ``x [B, T, N, D]``, ``edge_index [2, E]``, ``edge_weight [E]`` or None (see
    :class:`~stmgt.nn.blocks.spatial_branch.SpatialBranch`) -> ``h [B, T, N, D]``; with
    ``return_attention=True`` also ``(gate, attention)``: the fusion gate ``alpha [B, T, N, D]`` and
    the spatial attention ``(edge_index_with_loops [2, E'], alpha [B*T, E', heads])``, both None
    without the spatial branch.
    """

    def __init__(self, hidden: int = 96, heads: int = 4, dropout: float = 0.2, drop_edge: float = 0.05,
                 spatial: bool = True, fused: bool = True, edge_dim: int | None = None,
                 recompute_ffn: bool = False, fused_ffn: bool = True):
        super().__init__()
        self.spatial = (SpatialBranch(hidden, heads, dropout, drop_edge, fused=fused, edge_dim=edge_dim)
                        if spatial else None)
        self.temporal = TemporalBranch(hidden, heads, dropout, recompute_ffn=recompute_ffn, fused_ffn=fused_ffn)
        self.fusion = GatedFusion(hidden) if spatial else None

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None,
                return_attention: bool = False):
        t = self.temporal(x)
        if self.spatial is None:
            return (t, (None, None)) if return_attention else t
        if not return_attention:
            return self.fusion(self.spatial(x, edge_index, edge_weight), t)
        s, att = self.spatial(x, edge_index, edge_weight, return_attention=True)
        h, gate = self.fusion(s, t, return_attention=True)
        return h, (gate, att)
