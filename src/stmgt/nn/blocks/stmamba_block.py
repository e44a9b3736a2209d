"""The interleaved spatio-temporal block of STMamba: GAT over nodes, pivot, Mamba over time, pivot back.

Implements the original STMamba block design (see ``docs/design.md``) phase by phase. Space
and time are factorised: a graph attention layer mixes the nodes of each time step, then every
node's series is run through a Mamba layer (Gu and Dao, arXiv:2312.00752), with residual +
LayerNorm around both.
The two pivots only reinterpret the layout (:func:`pivot_to_time`, :func:`pivot_to_space`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from stmgt.errors import ConfigError
from stmgt.nn.layers.gat import GraphAttention
from stmgt.nn.layers.mamba import Mamba, MambaState


def pivot_to_time(x: Tensor) -> Tensor:
    """Phase 2 pivot: ``[B, T, N, F] -> [B*N, T, F]``, row ``b*N + n`` is node ``n`` of sample ``b``.

    Values are not changed, only their layout: ``pivot_to_time(x)[b*N + n, t] == x[b, t, n]``.
    """
    B, T, N, F = x.shape
    return x.permute(0, 2, 1, 3).reshape(B * N, T, F)  # [B, N, T, F] -> [B*N, T, F]


def pivot_to_space(x: Tensor, batch_size: int, num_nodes: int) -> Tensor:
    """Phase 4 pivot, the inverse of :func:`pivot_to_time`: ``[B*N, T, F] -> [B, T, N, F]``."""
    _, T, F = x.shape
    # [B*N, T, F] -> [B, N, T, F] -> [B, T, N, F]
    return x.reshape(batch_size, num_nodes, T, F).permute(0, 2, 1, 3).contiguous()


class STMambaBlock(nn.Module):
    """Interleaved spatio-temporal block (``docs/design.md``): GAT over nodes, Mamba over time.

    1. Spatial: every time step is a graph, ``x [B*T, N, F] -> LayerNorm(x + Dropout(GAT(x)))``
       (GAT: Velickovic et al., ICLR 2018; GATv2: Brody et al., ICLR 2022; heads concatenated).
    2. Pivot ``[B, T, N, F] -> [B*N, T, F]``: each node becomes a sequence over time.
    3. Temporal: ``LayerNorm(x + Dropout(Mamba(x)))`` (Gu and Dao, arXiv:2312.00752), causal in time.
    4. Pivot back to ``[B, T, N, F]``.

    Args:
        hidden: features ``F`` (default 96), divisible by ``heads``.
        heads: attention heads (default 4), ``F // heads`` features each, concatenated.
        dropout: on the attention coefficients and on both branch outputs (default 0.2).
        drop_edge: DropEdge probability of the GAT during training (default 0.05).
        d_state, d_conv, expand: Mamba state size (16), convolution width (4), expansion (2).
        gat_v2: GATv2 instead of the original design's GAT (default False).
        scan: Mamba scan, ``"auto"`` (default), ``"compiled"``, ``"chunked"``, ``"sequential"``,
            ``"mambapy"`` or ``"cuda"`` (see :class:`~stmgt.nn.layers.mamba.Mamba`).
        spatial: with False, Phase 1 is skipped and the block is the temporal half alone (an
            ablation: "does the graph help?"). Default True.
        node_chunk: if set, memory-saving mode: the Mamba phase runs over chunks of at most
            ``node_chunk`` of the ``B*N`` node series, and while gradients are recorded each chunk,
            and each chunk of the scan inside it, is recomputed in the backward pass instead of
            stored (``torch.utils.checkpoint``). Same results, more compute. Default None.
        graph_chunk: if set, the same for Phase 1: the GAT (with its residual and LayerNorm) runs
            over chunks of at most ``graph_chunk`` of the ``B*T`` graphs, each recomputed in the
            backward pass. Default None. At 207 nodes, 1722 edges, history 288, batch 8, the GAT
            phase alone needs about 9 GiB for a training step without it.
        edge_dim: edge attribute size of the GAT, or None (default): no edge features.
            ``edge_dim=1`` reads the graph's edge weights (see :class:`~stmgt.nn.layers.gat.GraphAttention`).

    Shapes:
        ``forward``: ``x [B, T, N, F]``, ``edge_index [2, E]``, ``edge_weight [E]`` (None: unit
        weights with ``edge_dim``, must be None without) -> ``[B, T, N, F]``; with
        ``return_attention`` also ``(edge_index_with_self_loops [2, E'], alpha [B, T, E', heads])``
        (None without the spatial phase);
        with ``return_state`` also the :class:`~stmgt.nn.layers.mamba.MambaState` of the ``B*N`` series.
        ``step``: ``x_t [B, N, F]``, ``edge_index``, the state (and ``edge_weight``) -> ``[B, N, F]``
        and the new state.
    """

    def __init__(self, hidden: int = 96, heads: int = 4, dropout: float = 0.2, drop_edge: float = 0.05,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, gat_v2: bool = False,
                 scan: str = "auto", node_chunk: int | None = None, spatial: bool = True,
                 graph_chunk: int | None = None, edge_dim: int | None = None):
        super().__init__()
        if hidden % heads:
            raise ConfigError(f"STMamba hidden size {hidden} must be divisible by the {heads} attention"
                              " heads")
        for name, v in (("node_chunk", node_chunk), ("graph_chunk", graph_chunk)):
            if v is not None and v < 1:
                raise ConfigError(f"{name} must be a positive integer or None, got {v}")
        self.hidden, self.heads, self.node_chunk, self.graph_chunk = hidden, heads, node_chunk, graph_chunk
        # Phase 1: spatial
        self.spatial = self.drop_spatial = self.norm_spatial = None
        if spatial:
            self.spatial = GraphAttention(hidden, hidden // heads, heads, concat=True, dropout=dropout,
                                          drop_edge=drop_edge, v2=gat_v2, edge_dim=edge_dim)
            self.drop_spatial = nn.Dropout(dropout)
            self.norm_spatial = nn.LayerNorm(hidden)
        # Phase 3: temporal
        self.temporal = Mamba(hidden, d_state=d_state, d_conv=d_conv, expand=expand, scan=scan,
                              checkpoint=node_chunk is not None)
        self.drop_temporal = nn.Dropout(dropout)
        self.norm_temporal = nn.LayerNorm(hidden)

    def init_state(self, batch_size: int, num_nodes: int, device=None, dtype=None) -> MambaState:
        """Zero recurrent state of ``batch_size * num_nodes`` node series (what ``forward`` starts from)."""
        return self.temporal.init_state(batch_size * num_nodes, device=device, dtype=dtype)

    def _spatial(self, xs: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        """Phase 1 on ``xs [B*T, N, F]``: ``LayerNorm(xs + Dropout(GAT(xs)))``."""
        return self.norm_spatial(xs + self.drop_spatial(self.spatial(xs, edge_index, edge_weight)))

    def _spatial_chunked(self, xs: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        """Phase 1 over chunks of ``graph_chunk`` graphs, recomputed in the backward pass."""
        if self.graph_chunk is None or xs.shape[0] <= self.graph_chunk:
            return self._spatial(xs, edge_index, edge_weight)
        outs = []
        for c in xs.split(self.graph_chunk):  # each [<=graph_chunk, N, F]
            if torch.is_grad_enabled():
                outs.append(_checkpoint(self._spatial, c, edge_index, edge_weight, use_reentrant=False))
            else:
                outs.append(self._spatial(c, edge_index, edge_weight))
        return torch.cat(outs)  # [B*T, N, F]

    def _mamba(self, x: Tensor, state: MambaState | None) -> tuple[Tensor, MambaState]:
        """Phase 3 core, ``[B*N, T, F] -> [B*N, T, F]`` and the final state, chunked over rows if asked."""
        R = x.shape[0]
        if self.node_chunk is None or R <= self.node_chunk:
            return self.temporal(x, state=state, return_state=True)
        ys, convs, ssms = [], [], []
        for r0 in range(0, R, self.node_chunk):
            rows = slice(r0, r0 + self.node_chunk)
            st = None if state is None else MambaState(state.conv[rows], state.ssm[rows])
            if torch.is_grad_enabled():
                y, st = _checkpoint(self.temporal, x[rows], st, True, use_reentrant=False)
            else:
                y, st = self.temporal(x[rows], state=st, return_state=True)
            ys.append(y)
            convs.append(st.conv)
            ssms.append(st.ssm)
        return torch.cat(ys), MambaState(torch.cat(convs), torch.cat(ssms))

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None,
                return_attention: bool = False, state: MambaState | None = None, return_state: bool = False):
        """``x [B, T, N, F]`` -> ``[B, T, N, F]``; ``state`` continues the node series from an earlier
        call (zeros when None). Returns ``out``, then ``(edge_index, alpha)`` if ``return_attention``,
        then the final state if ``return_state``."""
        B, T, N, F = x.shape
        # Phase 1: spatial modelling, time as batch
        xs = x.reshape(B * T, N, F)  # [B*T, N, F]: every time step is an independent graph
        ei = alpha = None
        if self.spatial is not None and return_attention:
            g, (ei, alpha) = self.spatial(xs, edge_index, edge_weight, return_attention=True)  # [B*T, E', H]
            alpha = alpha.reshape(B, T, *alpha.shape[1:])  # [B*T, E', H] -> [B, T, E', H]
            xs = self.norm_spatial(xs + self.drop_spatial(g))  # [B*T, N, F]
        elif self.spatial is not None:
            xs = self._spatial_chunked(xs, edge_index, edge_weight)  # [B*T, N, F]
        # Phase 2: pivot, nodes become independent sequences over time
        xt = pivot_to_time(xs.reshape(B, T, N, F))  # [B, T, N, F] -> [B*N, T, F]
        # Phase 3: temporal modelling
        m, new_state = self._mamba(xt, state)  # [B*N, T, F]
        xt = self.norm_temporal(xt + self.drop_temporal(m))  # [B*N, T, F]
        # Phase 4: restore [B, T, N, F]
        out = pivot_to_space(xt, B, N)  # [B*N, T, F] -> [B, T, N, F]
        res = (out,)
        if return_attention:
            res += ((ei, alpha) if alpha is not None else None,)
        if return_state:
            res += (new_state,)
        return res[0] if len(res) == 1 else res

    def step(self, x_t: Tensor, edge_index: Tensor, state: MambaState,
             edge_weight: Tensor | None = None) -> tuple[Tensor, MambaState]:
        """One new time step ``x_t [B, N, F]`` -> ``[B, N, F]`` and the new state. In eval mode,
        stepping through a window from :meth:`init_state` gives ``forward`` on that window, step by step."""
        B, N, F = x_t.shape
        xs = x_t
        if self.spatial is not None:
            g = self.spatial(x_t, edge_index, edge_weight)  # [B, N, F]: the B graphs of this time step
            xs = self.norm_spatial(x_t + self.drop_spatial(g))  # [B, N, F]
        r = xs.reshape(B * N, F)  # [B*N, F]: row b*N + n, as pivot_to_time
        m, state = self.temporal.step(r, state)  # [B*N, F]
        out = self.norm_temporal(r + self.drop_temporal(m)).reshape(B, N, F)  # [B*N, F] -> [B, N, F]
        return out, state

    def extra_repr(self) -> str:
        return (f"hidden={self.hidden}, heads={self.heads}, spatial={self.spatial is not None},"
                f" node_chunk={self.node_chunk}, graph_chunk={self.graph_chunk}")
