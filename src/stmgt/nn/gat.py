"""Graph attention over a batch of graphs that share one edge list.

The design document runs PyG's ``GATv2Conv`` on a graph copied once per sample and time
step (``[B*T*N, F]`` with a ``B*T``-times replicated ``edge_index``). Here the node features
keep a leading batch dimension ``[B', N, F]`` and the one ``edge_index [2, E]`` is indexed
once for the whole batch: no copies of the graph, and the same numbers as ``GATv2Conv``
(checked against PyG in ``tests/nn/test_gat.py``).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# index_reduce_ is stable in practice; torch marks it beta and warns on first use
warnings.filterwarnings("ignore", message=r"index_reduce\(\) is in beta", category=UserWarning)


def add_self_loops(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Remove existing self-loops from ``edge_index [2, E]`` and append one per node (as PyG does)."""
    keep = edge_index[0] != edge_index[1]
    loops = torch.arange(num_nodes, device=edge_index.device).expand(2, num_nodes)
    return torch.cat([edge_index[:, keep], loops], dim=1)


def segment_softmax(logits: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    """Softmax of ``logits [B', E, H]`` over the edges that share a target node ``dst [E]``."""
    # the max is only for numerical stability: softmax is invariant to it, so no gradient is needed
    with torch.no_grad():
        m = logits.new_full((logits.shape[0], num_nodes, logits.shape[2]), float("-inf"))
        m.index_reduce_(1, dst, logits, "amax", include_self=True)  # [B', N, H]
    e = (logits - m.index_select(1, dst)).exp()  # [B', E, H]
    denom = torch.zeros_like(m).index_add_(1, dst, e)  # [B', N, H]
    return e / denom.index_select(1, dst).clamp_min(1e-16)


class GraphAttention(nn.Module):
    r"""Multi-head graph attention (GATv2 or GAT) on ``[B', N, F]`` with one shared ``edge_index``.

    GATv2 (Brody, Alon and Yahav, "How Attentive are Graph Attention Networks?", ICLR 2022):

    .. math::
        \alpha_{ij} = \mathrm{softmax}_j\big(a^\top \mathrm{LeakyReLU}(W_r h_i + W_l h_j)\big),\qquad
        h_i' = \sum_{j \in \mathcal{N}(i) \cup \{i\}} \alpha_{ij} W_l h_j + b

    GAT (Velickovic et al., "Graph Attention Networks", ICLR 2018), with ``v2=False``:
    :math:`\alpha_{ij} = \mathrm{softmax}_j(\mathrm{LeakyReLU}(a_r^\top W h_i + a_l^\top W h_j))`.

    Args:
        in_channels: input features ``F``.
        out_channels: features per head ``C``.
        heads: attention heads ``H`` (default 4).
        concat: concatenate heads (output ``H*C``) or average them (output ``C``). Default True.
        negative_slope: LeakyReLU slope (default 0.2).
        dropout: dropout on the attention coefficients during training (default 0.0).
        drop_edge: probability of dropping each (non-self-loop) edge per graph in the batch
            during training, DropEdge (Rong et al., ICLR 2020). Default 0.0.
        v2: GATv2 (default) or the original GAT.
        bias: add a learned bias (default True).

    Shapes:
        ``x [B', N, F]``, ``edge_index [2, E]`` (``source -> target``; self-loops are added)
        -> ``[B', N, H*C]`` (or ``[B', N, C]`` with ``concat=False``). With
        ``return_attention=True`` also ``(edge_index_with_loops [2, E'], alpha [B', E', H])``.

    Parameter names follow PyG's ``GATv2Conv`` (``lin_l``, ``lin_r``, ``att``, ``bias``) and
    ``GATConv`` (``lin``, ``att_src``, ``att_dst``, ``bias``).
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 4, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, drop_edge: float = 0.0,
                 v2: bool = True, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.negative_slope, self.dropout = concat, negative_slope, dropout
        self.drop_edge, self.v2 = drop_edge, v2
        hc = heads * out_channels
        if v2:
            self.lin_l = nn.Linear(in_channels, hc)
            self.lin_r = nn.Linear(in_channels, hc)
            self.att = nn.Parameter(torch.empty(1, heads, out_channels))
        else:
            self.lin = nn.Linear(in_channels, hc, bias=False)
            self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
            self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        self.bias = nn.Parameter(torch.zeros(hc if concat else out_channels)) if bias else None
        self.reset_parameters()
        self._loops_cache: tuple[Tensor, int, Tensor] | None = None

    def reset_parameters(self) -> None:
        if self.v2:
            for lin in (self.lin_l, self.lin_r):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
            nn.init.xavier_uniform_(self.att)
        else:
            nn.init.xavier_uniform_(self.lin.weight)
            nn.init.xavier_uniform_(self.att_src)
            nn.init.xavier_uniform_(self.att_dst)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _with_loops(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        c = self._loops_cache
        if c is not None and c[0] is edge_index and c[1] == num_nodes:
            return c[2]
        ei = add_self_loops(edge_index, num_nodes)
        self._loops_cache = (edge_index, num_nodes, ei)
        return ei

    def forward(self, x: Tensor, edge_index: Tensor, return_attention: bool = False):
        Bp, N, _ = x.shape
        H, C = self.heads, self.out_channels
        ei = self._with_loops(edge_index, N)
        src, dst = ei[0], ei[1]
        if self.v2:
            # one matmul for both projections: [B', N, F] -> [B', N, 2*H*C]
            w = torch.cat([self.lin_l.weight, self.lin_r.weight], 0)
            b = torch.cat([self.lin_l.bias, self.lin_r.bias], 0)
            xl, xr = F.linear(x, w, b).view(Bp, N, 2, H, C).unbind(2)  # each [B', N, H, C]
            xj = xl.index_select(1, src)  # [B', E', H, C] messages from sources
            s = F.leaky_relu(xj + xr.index_select(1, dst), self.negative_slope)
            logits = (s * self.att).sum(-1)  # [B', E', H]
        else:
            xl = self.lin(x).view(Bp, N, H, C)
            xj = xl.index_select(1, src)  # [B', E', H, C]
            a_src = (xl * self.att_src).sum(-1)  # [B', N, H]
            a_dst = (xl * self.att_dst).sum(-1)
            logits = F.leaky_relu(a_src.index_select(1, src) + a_dst.index_select(1, dst), self.negative_slope)
        if self.training and self.drop_edge > 0:
            # DropEdge: each graph of the batch loses its own random edges; self-loops stay
            drop = torch.rand(Bp, src.numel(), 1, device=x.device) < self.drop_edge
            drop[:, src == dst] = False
            logits = logits.masked_fill(drop, float("-inf"))
        alpha = segment_softmax(logits, dst, N)  # [B', E', H]
        if self.training and self.dropout > 0:
            alpha = F.dropout(alpha, self.dropout)
        out = x.new_zeros(Bp, N, H, C).index_add_(1, dst, xj * alpha.unsqueeze(-1))  # [B', N, H, C]
        out = out.reshape(Bp, N, H * C) if self.concat else out.mean(2)
        if self.bias is not None:
            out = out + self.bias
        if return_attention:
            return out, (ei, alpha)
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, heads={self.heads}, v2={self.v2},"
                f" dropout={self.dropout}, drop_edge={self.drop_edge}")
