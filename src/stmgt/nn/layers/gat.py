"""Graph attention over a batch of graphs that share one edge list.

The original STMGT design (see ``docs/design.md``) runs PyG's ``GATv2Conv`` (Brody et al.,
ICLR 2022) on a graph copied once per sample and time step (``[B*T*N, F]`` with a
``B*T``-times replicated ``edge_index``). Here the node features keep a leading batch
dimension ``[B', N, F]`` and the one ``edge_index [2, E]`` is indexed once for the whole batch:
no copies of the graph, and the same numbers as ``GATv2Conv`` (checked against PyG in
``tests/nn/layers/test_gat.py``).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stmgt.nn.layers.dropout import fast_dropout


def add_self_loops(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Remove existing self-loops from ``edge_index [2, E]`` and append one per node (as PyG does)."""
    keep = edge_index[0] != edge_index[1]
    loops = torch.arange(num_nodes, device=edge_index.device).expand(2, num_nodes)
    return torch.cat([edge_index[:, keep], loops], dim=1)


class EdgePlan:
    """A graph prepared once for batched message passing: edges (with self-loops) sorted by target.

    Sums over the edges of each target become ``segment_reduce`` over contiguous runs, and the
    backward of every gather is a segment sum too: no ``index_add_`` (whose multi-threaded CPU
    kernel along a non-leading dimension is very slow) anywhere in the forward or backward pass.

    Attributes:
        edge_index: ``[2, E']`` sorted by target, self-loops included.
        src, dst: its rows.
        dst_lengths: ``[N]`` edges per target. ``src_perm``, ``src_lengths``: the edges ordered by
        source and their counts, for the backward of the source gather.
        keep: ``[E]`` which input edges are kept (not self-loops); ``order``: ``[E']`` the position
        in ``[kept edges, self-loops]`` of each planned edge (see :meth:`edge_attr`).
    """

    def __init__(self, edge_index: Tensor, num_nodes: int):
        self.keep = edge_index[0] != edge_index[1]  # [E]
        self.kept_dst = edge_index[1, self.keep]  # [E_kept]
        ei = add_self_loops(edge_index, num_nodes)  # [2, E_kept + N]: the kept edges, then the loops
        order = torch.argsort(ei[1] * num_nodes + ei[0])
        self.order = order
        self.edge_index = ei[:, order]
        self.src, self.dst = self.edge_index[0].contiguous(), self.edge_index[1].contiguous()
        self.num_nodes = num_nodes
        self.dst_lengths = torch.bincount(self.dst, minlength=num_nodes)
        self.src_perm = torch.argsort(self.src, stable=True)
        self.src_lengths = torch.bincount(self.src, minlength=num_nodes)
        self.is_loop = self.src == self.dst

    def edge_attr(self, edge_attr: Tensor, dim: int = 1) -> Tensor:
        """Edge features of the input edges ``[E, dim]`` (or ``[E]``) -> ``[E', dim]`` in plan order.

        As PyG's ``GATConv``/``GATv2Conv`` (``remove_self_loops``, then ``add_self_loops`` with
        ``fill_value="mean"``): input self-loops are dropped and each node's self-loop gets the mean
        feature of its incoming edges (zeros for a node without incoming edges).
        """
        a = edge_attr.reshape(self.keep.shape[0], dim)[self.keep]  # [E, D] -> [E_kept, D]
        N, D = self.num_nodes, dim
        total = a.new_zeros(N, D).index_add_(0, self.kept_dst, a)  # [N, D]
        count = torch.bincount(self.kept_dst, minlength=N).clamp_min(1).to(a.dtype)  # [N]
        full = torch.cat([a, total / count.unsqueeze(1)])  # [E_kept + N, D]: edges, then self-loops
        return full.index_select(0, self.order)  # [E', D]


def _segment_sum(x: Tensor, lengths: Tensor) -> Tensor:
    """Sum contiguous runs of ``lengths [N]`` along dim 1 of ``x [B', E, ...]`` -> ``[B', N, ...]``."""
    return torch.segment_reduce(x, "sum", lengths=lengths.expand(x.shape[0], -1), axis=1)


class _Gather(torch.autograd.Function):
    """``x.index_select(1, index)`` whose backward is a segment sum over ``perm``-sorted edges."""

    @staticmethod
    def forward(ctx, x, index, perm, lengths):
        ctx.save_for_backward(perm, lengths)
        return x.index_select(1, index)

    @staticmethod
    def backward(ctx, grad):
        perm, lengths = ctx.saved_tensors
        g = grad if perm is None or perm.numel() == 0 else grad.index_select(1, perm)
        return _segment_sum(g.contiguous(), lengths), None, None, None


class _SegmentSum(torch.autograd.Function):
    """Sum over the target of each (target-sorted) edge: ``[B', E, ...] -> [B', N, ...]``."""

    @staticmethod
    def forward(ctx, x, dst, lengths):
        ctx.save_for_backward(dst)
        return _segment_sum(x.contiguous(), lengths)

    @staticmethod
    def backward(ctx, grad):
        (dst,) = ctx.saved_tensors
        return grad.index_select(1, dst), None, None


def gather_src(x: Tensor, plan: EdgePlan) -> Tensor:
    """``x [B', N, ...] -> [B', E', ...]``: the features of each edge's source."""
    return _Gather.apply(x, plan.src, plan.src_perm, plan.src_lengths)


def gather_dst(x: Tensor, plan: EdgePlan) -> Tensor:
    """``x [B', N, ...] -> [B', E', ...]``: the features of each edge's target."""
    return _Gather.apply(x, plan.dst, torch.empty(0, dtype=torch.long, device=x.device), plan.dst_lengths)


def segment_sum(x: Tensor, plan: EdgePlan) -> Tensor:
    """``x [B', E', ...] -> [B', N, ...]``: the sum over the incoming edges of every node."""
    return _SegmentSum.apply(x, plan.dst, plan.dst_lengths)


def segment_softmax(logits: Tensor, plan: EdgePlan) -> Tensor:
    """Softmax of ``logits [B', E', H]`` over the edges that share a target node."""
    # the max is only for numerical stability: softmax is invariant to it, so no gradient is needed
    with torch.no_grad():
        m = torch.segment_reduce(logits, "max", lengths=plan.dst_lengths.expand(logits.shape[0], -1), axis=1)
    e = (logits - m.index_select(1, plan.dst)).exp()  # [B', E', H]
    denom = segment_sum(e, plan)  # [B', N, H]
    return e / gather_dst(denom, plan).clamp_min(1e-16)


class _FusedScore(torch.autograd.Function):
    """GATv2 logits ``a . LeakyReLU(xl[src] + xr[dst])`` per edge and head, from node-level tensors
    (compiled kernel; the edge-sized ``[B', E', H, C]`` tensors of the PyTorch path never exist)."""

    @staticmethod
    def forward(ctx, xl, xr, att, src, dst, heads, slope):
        from stmgt.kernels import graph_attention_extension

        att_shape = att.shape
        xl, xr, att = xl.contiguous(), xr.contiguous(), att.reshape(-1).contiguous()
        ctx.save_for_backward(xl, xr, att, src, dst)
        ctx.heads, ctx.slope, ctx.att_shape = heads, slope, att_shape
        return graph_attention_extension().score_forward(xl, xr, att, src, dst, heads, slope)

    @staticmethod
    def backward(ctx, grad):
        from stmgt.kernels import graph_attention_extension

        xl, xr, att, src, dst = ctx.saved_tensors
        gl, gr, ga = graph_attention_extension().score_backward(grad, xl, xr, att, src, dst, ctx.heads, ctx.slope)
        return gl, gr, ga.view(ctx.att_shape), None, None, None, None


class _FusedAggregate(torch.autograd.Function):
    """``out[b, i] = sum_{e: dst_e = i} alpha[b, e, h] * xl[b, src_e, h, :]`` (compiled kernel)."""

    @staticmethod
    def forward(ctx, alpha, xl, src, dst):
        from stmgt.kernels import graph_attention_extension

        alpha, xl = alpha.contiguous(), xl.contiguous()
        ctx.save_for_backward(alpha, xl, src, dst)
        return graph_attention_extension().aggregate_forward(alpha, xl, src, dst)

    @staticmethod
    def backward(ctx, grad):
        from stmgt.kernels import graph_attention_extension

        alpha, xl, src, dst = ctx.saved_tensors
        ga, gl = graph_attention_extension().aggregate_backward(grad, alpha, xl, src, dst)
        return ga, gl, None, None


@lru_cache(maxsize=1)
def fused_kernels_available() -> bool:
    """Whether the compiled graph-attention kernels can be used here (built once; a warning if not)."""
    from stmgt.kernels import graph_attention_extension, usable

    return usable(graph_attention_extension, "the PyTorch graph attention")


class GraphAttention(nn.Module):
    r"""Multi-head graph attention (GATv2 or GAT) on ``[B', N, F]`` with one shared ``edge_index``.

    GATv2 (Brody, Alon and Yahav, "How Attentive are Graph Attention Networks?", ICLR 2022):

    .. math::
        \alpha_{ij} = \mathrm{softmax}_j\big(a^\top \mathrm{LeakyReLU}(W_r h_i + W_l h_j)\big),\qquad
        h_i' = \sum_{j \in \mathcal{N}(i) \cup \{i\}} \alpha_{ij} W_l h_j + b

    GAT (Velickovic et al., "Graph Attention Networks", ICLR 2018), with ``v2=False``:
    :math:`\alpha_{ij} = \mathrm{softmax}_j(\mathrm{LeakyReLU}(a_r^\top W h_i + a_l^\top W h_j))`.

    Edge features (``edge_dim``), as PyG's ``GATv2Conv``/``GATConv(edge_dim=...)``: the edge
    attribute :math:`e_{ij}` enters the logits, :math:`a^\top \mathrm{LeakyReLU}(W_r h_i + W_l h_j
    + W_e e_{ij})` (GATv2) or :math:`+ a_e^\top W_e e_{ij}` inside the LeakyReLU (GAT); each added
    self-loop gets the mean attribute of its node's incoming edges (PyG's ``fill_value="mean"``).
    Edge weights ``[E]`` are a 1-dim attribute (``edge_dim=1``). Messages stay :math:`W_l h_j`.

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
        fused: GATv2 on CPU tensors runs its edge operations in compiled kernels
            (:mod:`stmgt.kernels`) that keep only node-level features and ``[B', E', H]`` scores:
            the same numbers, several times less memory and time. Default True; falls back to
            PyTorch (with a warning) where the kernels cannot be built. The kernels have no edge
            features: with ``edge_dim`` set the layer always runs the PyTorch path (same numbers,
            the PyTorch path's memory and time).
        edge_dim: size ``D`` of the edge attributes, or None (default) for no edge features.

    Shapes:
        ``x [B', N, F]``, ``edge_index [2, E]`` (``source -> target``; self-loops are added),
        ``edge_attr [E, D]`` or ``[E]`` (shared by the ``B'`` graphs; with ``edge_dim`` set and
        ``edge_attr=None``, all ones: unit weights) -> ``[B', N, H*C]`` (or ``[B', N, C]`` with
        ``concat=False``). With ``return_attention=True`` also
        ``(edge_index_with_loops [2, E'], alpha [B', E', H])``. DropEdge removes an edge's logit,
        attribute included; the self-loops' attributes are the mean over all incoming edges.

    Parameter names follow PyG's ``GATv2Conv`` (``lin_l``, ``lin_r``, ``att``, ``lin_edge``, ``bias``)
    and ``GATConv`` (``lin``, ``att_src``, ``att_dst``, ``lin_edge``, ``att_edge``, ``bias``).
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 4, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, drop_edge: float = 0.0,
                 v2: bool = True, bias: bool = True, fused: bool = True, edge_dim: int | None = None):
        super().__init__()
        self.fused, self.edge_dim = fused, edge_dim
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
        if edge_dim is not None:
            self.lin_edge = nn.Linear(edge_dim, hc, bias=False)
            if not v2:
                self.att_edge = nn.Parameter(torch.empty(1, heads, out_channels))
        self.bias = nn.Parameter(torch.zeros(hc if concat else out_channels)) if bias else None
        self.reset_parameters()
        self._plan_cache: tuple[Tensor, EdgePlan] | None = None
        self._attr_cache: tuple[Tensor | None, EdgePlan, Tensor] | None = None

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
        if self.edge_dim is not None:
            nn.init.xavier_uniform_(self.lin_edge.weight)
            if not self.v2:
                nn.init.xavier_uniform_(self.att_edge)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def plan(self, edge_index: Tensor, num_nodes: int) -> EdgePlan:
        """The :class:`EdgePlan` of ``edge_index`` (built once and cached for a static graph)."""
        c = self._plan_cache
        if c is not None and c[0] is edge_index and c[1].num_nodes == num_nodes:
            return c[1]
        plan = EdgePlan(edge_index, num_nodes)
        self._plan_cache = (edge_index, plan)
        return plan

    def planned_edge_attr(self, edge_attr: Tensor | None, edge_index: Tensor, plan: EdgePlan) -> Tensor:
        """``edge_attr [E, D]`` (ones when None) in ``plan``'s order with the self-loops' means: ``[E', D]``
        (cached for a static graph and attribute tensor)."""
        c = self._attr_cache
        if c is not None and c[0] is edge_attr and c[1] is plan:
            return c[2]
        key = edge_attr
        if edge_attr is None:
            edge_attr = torch.ones(edge_index.shape[1], self.edge_dim, device=edge_index.device)
        if edge_attr.shape[0] != edge_index.shape[1] or edge_attr.numel() != edge_index.shape[1] * self.edge_dim:
            raise ValueError(f"edge_attr of shape {tuple(edge_attr.shape)} does not fit {edge_index.shape[1]}"
                             f" edges with edge_dim={self.edge_dim}")
        out = plan.edge_attr(edge_attr.float(), self.edge_dim)  # [E', D]
        self._attr_cache = (key, plan, out)
        return out

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                return_attention: bool = False):
        Bp, N, _ = x.shape
        H, C = self.heads, self.out_channels
        plan = self.plan(edge_index, N)
        e = None
        if self.edge_dim is not None:
            ea = self.planned_edge_attr(edge_attr, edge_index, plan)  # [E', D]
            e = self.lin_edge(ea.to(x.dtype)).view(-1, H, C)  # [E', H, C], shared by the B' graphs
        elif edge_attr is not None:
            raise ValueError("edge_attr was given to a GraphAttention without edge features: set edge_dim")
        if self.v2:
            # one matmul for both projections: [B', N, F] -> [B', N, 2*H*C]
            w = torch.cat([self.lin_l.weight, self.lin_r.weight], 0)
            b = torch.cat([self.lin_l.bias, self.lin_r.bias], 0)
            xl, xr = F.linear(x, w, b).view(Bp, N, 2, H, C).unbind(2)  # each [B', N, H, C]
            if e is None and self._use_fused(x):
                return self._fused_forward(xl, xr, plan, return_attention)
            xj = gather_src(xl, plan)  # [B', E', H, C] messages from sources
            z = xj + gather_dst(xr, plan)  # [B', E', H, C]
            if e is not None:
                z = z + e
            s = F.leaky_relu(z, self.negative_slope)
            logits = (s * self.att).sum(-1)  # [B', E', H]
        else:
            xl = self.lin(x).view(Bp, N, H, C)
            xj = gather_src(xl, plan)  # [B', E', H, C]
            a_src = (xl * self.att_src).sum(-1)  # [B', N, H]
            a_dst = (xl * self.att_dst).sum(-1)
            z = gather_src(a_src, plan) + gather_dst(a_dst, plan)  # [B', E', H]
            if e is not None:
                z = z + (e * self.att_edge).sum(-1)  # + [E', H]
            logits = F.leaky_relu(z, self.negative_slope)
        alpha = self._attention(logits, plan)  # [B', E', H]
        out = segment_sum(xj * alpha.unsqueeze(-1), plan)  # [B', N, H, C]
        return self._finish(out, plan, alpha, return_attention)

    def _use_fused(self, x: Tensor) -> bool:
        return self.fused and x.device.type == "cpu" and fused_kernels_available()

    def _attention(self, logits: Tensor, plan: EdgePlan) -> Tensor:
        """DropEdge, the softmax over each target's edges, and attention dropout: ``[B', E', H]``."""
        if self.training and self.drop_edge > 0:
            # DropEdge: each graph of the batch loses its own random edges; self-loops stay
            drop = torch.rand(logits.shape[0], plan.src.numel(), 1, device=logits.device) < self.drop_edge
            drop &= ~plan.is_loop.view(1, -1, 1)
            logits = logits.masked_fill(drop, float("-inf"))
        alpha = segment_softmax(logits, plan)  # [B', E', H]
        if self.training and self.dropout > 0:
            alpha = fast_dropout(alpha, self.dropout)  # cheaper CPU random numbers, same distribution
        return alpha

    def _finish(self, out: Tensor, plan: EdgePlan, alpha: Tensor, return_attention: bool):
        Bp, N, H, C = out.shape
        out = out.reshape(Bp, N, H * C) if self.concat else out.mean(2)
        if self.bias is not None:
            out = out + self.bias
        if return_attention:
            return out, (plan.edge_index, alpha)
        return out

    def _fused_forward(self, xl: Tensor, xr: Tensor, plan: EdgePlan, return_attention: bool):
        Bp, N, H, C = xl.shape
        dtype = xl.dtype if xl.dtype in (torch.float32, torch.float64) else torch.float32  # bf16 autocast
        xl = xl.reshape(Bp, N, H * C).to(dtype)  # [B', N, H*C]
        xr = xr.reshape(Bp, N, H * C).to(dtype)
        logits = _FusedScore.apply(xl, xr, self.att.to(dtype), plan.src, plan.dst, H,
                                   float(self.negative_slope))  # [B', E', H]
        alpha = self._attention(logits, plan)
        out = _FusedAggregate.apply(alpha, xl, plan.src, plan.dst).view(Bp, N, H, C)  # [B', N, H, C]
        return self._finish(out, plan, alpha, return_attention)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, heads={self.heads}, v2={self.v2},"
                f" dropout={self.dropout}, drop_edge={self.drop_edge}, edge_dim={self.edge_dim}")
