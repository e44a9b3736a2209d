"""Graph WaveNet baseline: gated dilated causal convolutions with diffusion graph convolutions.

Wu, Pan, Long, Jiang and Zhang, "Graph WaveNet for Deep Spatial-Temporal Graph Modeling",
IJCAI 2019 (reference code: github.com/nnzhan/Graph-WaveNet). Layout, layer sizes and the
padding of the input to the receptive field follow the reference code. Three changes make it
fit this library: the fixed supports (forward and backward random-walk transition matrices) are
applied sparsely over ``edge_index`` (and its weights, with ``edge_weights`` on) with ``index_add``
(never a dense ``N x N`` matrix), the
dense self-adaptive adjacency is only built for graphs of at most ``adaptive_max_nodes`` nodes,
and the final convolution outputs ``H`` feature vectors per node for the shared Gaussian-mixture
head instead of ``H`` values.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from stmgt.config import NeuralModelConfig
from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.models.base import DataInfo, ForecastModel
from stmgt.nn.layers.gat import add_self_loops
from stmgt.nn.layers.mixture_head import GaussianMixtureHead


class SparseTransition:
    """A random-walk transition matrix applied over an edge list: ``out[j] = sum_i P[i, j] x[i]``.

    Built from directed edges ``i -> j`` with weights ``w_ij`` (unit weights when ``weight`` is
    None) and one unit self-loop per node (the reference's adjacency has a unit diagonal; existing
    self-loops and their weights are replaced), i.e. ``A[i, j] = sum of w over the edges i -> j``,
    ``A[i, i] = 1``. ``forward=True`` is ``P_f = D_out^-1 A`` and ``forward=False`` is
    ``P_b = D_in^-1 A^T``, the two supports of the reference's ``doubletransition`` adjacency
    (``asym_adj(adj_mx)``, ``asym_adj(adj_mx.T)``), applied as the reference's ``nconv`` does
    (``x P``). Degrees are weighted sums and never zero (the self-loop).

    Args:
        edge_index: ``[2, E]`` directed edges ``source -> target``.
        num_nodes: ``N``.
        forward: direction of the walk (default True).
        weight: ``[E]`` non-negative edge weights, or None (default) for unit weights.

    Shapes: ``x [N, B, L, C] -> [N, B, L, C]`` (cost ``O((E + N) B L C)``, no ``N x N`` matrix).
    """

    def __init__(self, edge_index: Tensor, num_nodes: int, forward: bool = True, weight: Tensor | None = None):
        keep = edge_index[0] != edge_index[1]
        ei = add_self_loops(edge_index, num_nodes)  # [2, E_kept + N]: the kept edges, then the loops
        src, dst = (ei[0], ei[1]) if forward else (ei[1], ei[0])
        if weight is None:
            w = torch.ones(src.shape[0], device=ei.device)  # [E_kept + N]
        else:
            w = torch.cat([weight.to(ei.device, torch.float32).reshape(-1)[keep],
                           torch.ones(num_nodes, device=ei.device)])  # [E_kept + N], unit self-loops
        deg = torch.zeros(num_nodes, device=ei.device).index_add_(0, src, w)  # [N], >= 1 (self-loop)
        self.src, self.dst, self.weight = src, dst, w / deg[src]  # weight [E_kept + N]

    def __call__(self, x: Tensor) -> Tensor:
        msg = x.index_select(0, self.src) * self.weight.to(x.dtype).view(-1, 1, 1, 1)  # [E + N, B, L, C]
        return torch.zeros_like(x).index_add_(0, self.dst, msg)  # [N, B, L, C]


class DenseTransition:
    """A dense ``N x N`` transition matrix applied as the reference's ``nconv``.

    ``out[w] = sum_v A[v, w] x[v]``.

    Shapes: ``x [N, B, L, C]``, ``adj [N, N]`` -> ``[N, B, L, C]``.
    """

    def __init__(self, adj: Tensor):
        self.adj = adj

    def __call__(self, x: Tensor) -> Tensor:
        return (self.adj.t().to(x.dtype) @ x.flatten(1)).view_as(x)  # [N, B*L*C] -> [N, B, L, C]


class DiffusionConv(nn.Module):
    """The reference's ``gcn``: ``mlp([x, P_1 x, P_1^2 x, ..., P_S^order x])`` then dropout.

    Args:
        c_in: input channels.
        c_out: output channels.
        supports: number of transition matrices ``S``.
        order: diffusion steps per matrix (default 2).
        dropout: dropout on the output (default 0.3, the reference's value).

    Shapes: ``x [N, B, L, c_in]`` and ``S`` operators ``[N, B, L, C] -> [N, B, L, C]``
    -> ``[N, B, L, c_out]``.
    """

    def __init__(self, c_in: int, c_out: int, supports: int, order: int = 2, dropout: float = 0.3):
        super().__init__()
        self.order = order
        self.mlp = nn.Linear((order * supports + 1) * c_in, c_out)  # the reference's 1x1 Conv2d
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, supports: list) -> Tensor:
        out = [x]
        for a in supports:
            h = x
            for _ in range(self.order):
                h = a(h)
                out.append(h)
        return self.dropout(self.mlp(torch.cat(out, dim=-1)))  # [N, B, L, (order*S+1)*c_in] -> [..., c_out]


class GraphWaveNetConfig(NeuralModelConfig):
    """Graph WaveNet's settings (``model: {name: gwnet, ...}``); sizes default to the reference code's.
    The paper uses dropout 0.3 (after each diffusion convolution)."""

    name: Literal["gwnet"] = "gwnet"
    residual_channels: int = Field(32, ge=1)
    """Channels of the residual stream."""
    dilation_channels: int = Field(32, ge=1)
    """Channels of the gated dilated convolutions."""
    skip_channels: int = Field(256, ge=1)
    """Channels of the skip connections."""
    end_channels: int = Field(512, ge=1)
    """Channels of the first output convolution."""
    blocks: int | None = Field(None, ge=1)
    """WaveNet blocks (None: the fewest, at least the paper's 4, whose receptive field covers the history)."""
    layers: int = Field(2, ge=1)
    """Dilated layers per block (dilations 1, 2, ..., 2^(layers-1))."""
    kernel_size: int = Field(2, ge=2)
    """Kernel of the dilated convolutions."""
    order: int = Field(2, ge=1)
    """Diffusion steps per transition matrix."""
    adaptive: bool = True
    """Learn the self-adaptive adjacency ``softmax(relu(E1 E2))``."""
    adaptive_max_nodes: int = Field(1000, ge=1)
    """Largest graph for which the dense adaptive adjacency is built."""
    embed_dim: int = Field(10, ge=1)
    """Size of the node embeddings ``E1, E2`` of the adaptive adjacency."""
    edge_weights: bool = False
    """Build the forward/backward transition matrices from the edge weights (the paper's weighted
    adjacency) instead of unit weights."""


class GraphWaveNet(ForecastModel):
    """Graph WaveNet (Wu et al., IJCAI 2019) with a Gaussian-mixture output.

    Input features per node and step: ``[x (C channels), observed mask, time of day]``
    (the reference uses value and time of day). ``start_conv`` to ``residual_channels``, then
    ``blocks x layers`` layers with dilations ``1, 2, ..., 2^(layers-1)`` per block (kernel 2:
    1,2,1,2,1,2,1,2 by default), each: gated TCN ``tanh(filter(x)) * sigmoid(gate(x))``, a skip
    convolution summed over layers, a diffusion convolution over the forward and backward
    transition matrices of ``edge_index`` (weighted by ``edge_weight`` with ``edge_weights`` on; plus
    the self-adaptive ``softmax(relu(E1 E2))`` when ``N <= adaptive_max_nodes``), a residual
    connection and BatchNorm. Then ``relu(skip)``, ``end_conv_1`` (ReLU) and ``end_conv_2`` to
    ``H * head_hidden`` channels, ReLU, and the shared :class:`GaussianMixtureHead`.

    The input is left-padded with zeros to the receptive field ``1 + blocks (k-1)(2^layers - 1)``
    as the reference does, so the last layer has one output step; ``blocks`` defaults to the
    smallest number (at least 4, the paper's) whose receptive field covers ``info.history``
    (13 steps for 4 blocks). A longer history at call time is trimmed to the receptive field.

    Computed in a node-first, channels-last layout ``[N, B, L, C]``: the reference's 1x1 convolutions are
    linear layers and the kernel-2 dilated convolutions linear layers on ``[x_t, x_{t+d}]``
    (the same operations, faster on CPU). Since only the last output step reaches the head,
    the skip convolutions are applied to each layer's last step only, and the last layer has
    no diffusion convolution, residual or BatchNorm (in the reference they do not reach the
    output either): the forecast is the reference's.

    Args:
        cfg: :class:`GraphWaveNetConfig`: ``hidden`` (features per horizon step given to the head,
            default 96), ``dropout`` (after each diffusion convolution, default 0.2; the paper uses
            0.3), ``mixtures`` (default 5), ``min_std`` (default 0.01), and the network's sizes with the
            reference's defaults: ``residual_channels`` 32, ``dilation_channels`` 32, ``skip_channels``
            256, ``end_channels`` 512, ``blocks`` None (see above), ``layers`` 2 per block,
            ``kernel_size`` 2, ``order`` 2 diffusion steps, ``adaptive`` True, ``adaptive_max_nodes``
            1000, ``embed_dim`` 10; ``edge_weights`` (default False): build the forward and backward
            transition matrices from the weighted adjacency (``A[i, j] = w_ij``, unit diagonal), as the
            reference does with its weighted ``adj_mx``; off, every edge has weight 1 (on without
            weights in the data: unit weights).
        info: :class:`~stmgt.models.base.DataInfo`: ``num_nodes``, ``in_channels``, ``history``,
            ``horizon`` are read.

    Shapes: ``batch.x [B, T, N, C]``, ``batch.x_mask [B, T, N]``, ``batch.tod [B, T + H]``,
    ``edge_index [2, E]``, ``edge_weight [E]`` or None -> :class:`GaussianMixture` with batch shape
    ``[B, H, N]`` (scaled units).
    """

    name = "gwnet"
    Config = GraphWaveNetConfig
    paper: str = "Graph WaveNet (Wu et al., IJCAI 2019): dilated TCN with diffusion graph convolutions"

    def __init__(self, cfg: GraphWaveNetConfig, info: DataInfo):
        super().__init__()
        self.edge_weights = cfg.edge_weights
        residual_channels, dilation_channels = cfg.residual_channels, cfg.dilation_channels
        skip_channels, end_channels, blocks, layers = cfg.skip_channels, cfg.end_channels, cfg.blocks, cfg.layers
        kernel_size, order, embed_dim = cfg.kernel_size, cfg.order, cfg.embed_dim
        self.num_nodes, self.horizon = info.num_nodes, info.horizon
        self.head_hidden = cfg.hidden
        self.kernel_size = kernel_size
        per_block = (kernel_size - 1) * (2**layers - 1)
        if blocks is None:
            blocks = max(4, math.ceil((info.history - 1) / per_block))
        self.receptive_field = 1 + blocks * per_block
        self.adaptive = cfg.adaptive and info.num_nodes <= cfg.adaptive_max_nodes
        if self.adaptive:
            self.nodevec1 = nn.Parameter(torch.randn(info.num_nodes, embed_dim))
            self.nodevec2 = nn.Parameter(torch.randn(embed_dim, info.num_nodes))
        supports = 2 + int(self.adaptive)
        self.dilations = [2**i for _ in range(blocks) for i in range(layers)]
        n_layers = len(self.dilations)
        self.start_conv = nn.Linear(info.in_channels + 2, residual_channels)
        self.filter_convs = nn.ModuleList(
            nn.Linear(kernel_size * residual_channels, dilation_channels) for _ in range(n_layers))
        self.gate_convs = nn.ModuleList(
            nn.Linear(kernel_size * residual_channels, dilation_channels) for _ in range(n_layers))
        self.skip_convs = nn.ModuleList(nn.Linear(dilation_channels, skip_channels) for _ in range(n_layers))
        self.gconv = nn.ModuleList(
            DiffusionConv(dilation_channels, residual_channels, supports, order, cfg.dropout)
            for _ in range(n_layers - 1))
        self.bn = nn.ModuleList(nn.BatchNorm1d(residual_channels) for _ in range(n_layers - 1))
        self.end_conv_1 = nn.Linear(skip_channels, end_channels)
        self.end_conv_2 = nn.Linear(end_channels, info.horizon * self.head_hidden)
        self.head = GaussianMixtureHead.from_config(self.head_hidden, cfg)

    def supports(self, edge_index: Tensor, edge_weight: Tensor | None = None) -> list:
        """The transition operators of one forward: forward and backward walks (and the adaptive one).

        ``edge_weight [E]`` is used only with ``edge_weights`` on."""
        w = edge_weight if self.edge_weights else None
        ops = [SparseTransition(edge_index, self.num_nodes, forward, w) for forward in (True, False)]
        if self.adaptive:
            ops.append(DenseTransition(F.softmax(F.relu(self.nodevec1 @ self.nodevec2), dim=1)))  # [N, N]
        return ops

    def taps(self, x: Tensor, d: int) -> Tensor:
        """Inputs of a kernel-``k`` convolution of dilation ``d``: ``[N, B, L, C] -> [N, B, L-(k-1)d, k*C]``.

        A linear layer on the result is the reference's ``Conv2d(C, C', (1, k), dilation=(1, d))``.
        """
        L = x.shape[2] - (self.kernel_size - 1) * d
        return torch.cat([x[:, :, j * d: j * d + L] for j in range(self.kernel_size)], dim=-1)

    def forward(self, batch: Batch, edge_index: Tensor, edge_weight: Tensor | None = None) -> GaussianMixture:
        x = batch.x
        B, T, N, _ = x.shape
        tod = batch.tod[:, :T].to(x.dtype).view(B, T, 1, 1).expand(B, T, N, 1)  # [B, T, N, 1]
        feats = torch.cat([x, batch.x_mask.unsqueeze(-1).to(x.dtype), tod], -1)  # [B, T, N, C + 2]
        h = feats.permute(2, 0, 1, 3)  # [B, T, N, F] -> [N, B, T, F]
        rf = self.receptive_field
        h = F.pad(h, (0, 0, rf - T, 0)) if T < rf else h[:, :, -rf:]  # [N, B, rf, F], zeros on the left
        h = self.start_conv(h)  # [N, B, rf, residual]
        supports = self.supports(edge_index, edge_weight)
        skip = 0
        last = len(self.dilations) - 1
        for i, d in enumerate(self.dilations):
            residual = h
            taps = self.taps(h, d)  # [N, B, L_i, k*residual]
            h = torch.tanh(self.filter_convs[i](taps)) * torch.sigmoid(self.gate_convs[i](taps))
            # h: [N, B, L_i, dilation]
            skip = skip + self.skip_convs[i](h[:, :, -1])  # [N, B, skip]
            if i == last:
                break
            h = self.gconv[i](h, supports) + residual[:, :, -h.shape[2]:]  # [N, B, L_i, residual]
            h = self.bn[i](h.reshape(-1, h.shape[-1])).view_as(h)  # BatchNorm over (N, B, L_i) per channel
        out = F.relu(self.end_conv_1(F.relu(skip)))  # [N, B, end]
        out = F.relu(self.end_conv_2(out))  # [N, B, H*D]
        out = out.view(N, B, self.horizon, self.head_hidden)  # [N, B, H*D] -> [N, B, H, D]
        out = out.permute(1, 2, 0, 3)  # [B, H, N, D]
        return self.head(out)
