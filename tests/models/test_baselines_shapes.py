"""GRU, Graph WaveNet and STID: shapes, gradients, finiteness, one optimisation step; GWNet parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stmgt.config import model_config
from stmgt.data.panel import Panel
from stmgt.data.windows import PanelData
from stmgt.models import DataInfo, build_model
from stmgt.models.gwnet import GraphWaveNet

N, SPD = 7, 24
NEURAL = ["gru", "gwnet", "stid"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tensors here are tiny: one thread is faster, and immune to a busy machine's thread contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_data(history: int, horizon: int, edges: bool = True) -> PanelData:
    rng = np.random.default_rng(0)
    T = 24 * 8
    t = np.arange(T)[:, None]
    values = 50 + 10 * np.sin(2 * np.pi * t / SPD + np.arange(N)) + rng.normal(0, 1, (T, N))
    mask = rng.random((T, N)) > 0.15
    values[~mask] = np.nan
    ring = np.stack([np.arange(N), (np.arange(N) + 1) % N])
    ei = np.concatenate([ring, ring[::-1]], 1) if edges else np.zeros((2, 0), dtype=np.int64)
    ts = np.datetime64("2024-01-01T00:00") + np.arange(T) * np.timedelta64(1, "h")
    panel = Panel(values=values, mask=mask, timestamps=ts, edge_index=ei)
    return PanelData(panel, history, horizon, (0.6, 0.2, 0.2), batch_size=5)


def make(name: str, data: PanelData, **kw):
    torch.manual_seed(0)
    cfg = model_config(name, hidden=16, mixtures=3, dropout=0.0, **kw)
    info = DataInfo(num_nodes=N, history=data.history, horizon=data.horizon, steps_per_day=SPD)
    return build_model(cfg, info)


def nll(model, batch, data) -> torch.Tensor:
    dist = model(batch, data.edge_index)
    y = (batch.y - data.scaler.target_loc) / data.scaler.target_scale
    m = batch.y_mask.float()
    return -(dist.log_prob(y) * m).sum() / m.sum()


@pytest.mark.parametrize("name", NEURAL)
@pytest.mark.parametrize("history,horizon", [(12, 12), (7, 4)])
def test_shapes_gradients_and_one_step(name, history, horizon):
    data = tiny_data(history, horizon)
    model = make(name, data)
    assert model.trainable
    batch = next(iter(data.loader("train", shuffle=False)))
    model.train()
    dist = model(batch, data.edge_index)
    assert tuple(dist.batch_shape) == (5, horizon, N) and dist.num_components == 3
    for t in (dist.means, dist.stds, dist.log_weights):
        assert torch.isfinite(t).all()
    loss = nll(model, batch, data)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.step()
    with torch.no_grad():
        assert nll(model, batch, data) < loss.detach()


@pytest.mark.parametrize("name", NEURAL)
def test_no_observation_and_no_edge(name):
    data = tiny_data(6, 3, edges=False)
    model = make(name, data).eval()
    batch = data.batch_at([0, 1])
    batch.x_mask[:] = False
    batch.x[:] = 0.0
    dist = model(batch, data.edge_index)
    assert tuple(dist.batch_shape) == (2, 3, N)
    assert torch.isfinite(dist.mean).all() and torch.isfinite(dist.stddev).all()


def test_gwnet_receptive_field_and_large_graph_switch():
    assert make("gwnet", tiny_data(12, 12)).receptive_field == 13
    assert make("gwnet", tiny_data(12, 12)).dilations == [1, 2] * 4
    long = make("gwnet", tiny_data(20, 3))
    assert long.receptive_field >= 20
    small = make("gwnet", tiny_data(6, 3), adaptive_max_nodes=N - 1)
    assert not small.adaptive and not any("nodevec" in n for n, _ in small.named_parameters())


def reference_gwnet(m: GraphWaveNet, batch, edge_index, edge_weight=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference code's forward (nnzhan/Graph-WaveNet, NCHW Conv2d, dense supports) with m's weights;
    ``edge_weight`` fills its weighted ``adj_mx`` (unit diagonal), else every edge has weight 1."""
    x = batch.x
    B, T, N_, _ = x.shape
    tod = batch.tod[:, :T].view(B, T, 1, 1).expand(B, T, N_, 1)
    inp = torch.cat([x, batch.x_mask.unsqueeze(-1).float(), tod], -1).permute(0, 3, 2, 1)  # [B, F, N, T]
    A = torch.zeros(N_, N_)
    A[edge_index[0], edge_index[1]] = 1.0 if edge_weight is None else edge_weight.float()
    A.fill_diagonal_(1.0)
    supports = [A / A.sum(1, keepdim=True), A.t() / A.t().sum(1, keepdim=True)]
    if m.adaptive:
        supports.append(F.softmax(F.relu(m.nodevec1 @ m.nodevec2), dim=1))

    def conv1x1(lin, h):
        return F.conv2d(h, lin.weight[:, :, None, None], lin.bias)

    def dconv(lin, h, d):
        k = m.kernel_size
        w = lin.weight.view(lin.out_features, k, -1).permute(0, 2, 1).unsqueeze(2)  # [out, in, 1, k]
        return F.conv2d(h, w, lin.bias, dilation=(1, d))

    h = F.pad(inp, (m.receptive_field - T, 0, 0, 0))
    h = conv1x1(m.start_conv, h)
    skip = 0
    for i, d in enumerate(m.dilations):
        residual = h
        h = torch.tanh(dconv(m.filter_convs[i], residual, d))
        h = h * torch.sigmoid(dconv(m.gate_convs[i], residual, d))
        s = conv1x1(m.skip_convs[i], h)
        skip = s if i == 0 else s + skip[..., -s.size(3):]
        if i == len(m.dilations) - 1:
            break  # the reference's last diffusion/BatchNorm does not reach the output
        out = [h]
        for a in supports:
            x1 = torch.einsum("ncvl,vw->ncwl", h, a)
            out.append(x1)
            for _ in range(2, m.gconv[i].order + 1):
                x1 = torch.einsum("ncvl,vw->ncwl", x1, a)
                out.append(x1)
        h = conv1x1(m.gconv[i].mlp, torch.cat(out, 1)) + residual[..., -h.size(3):]
        bn = m.bn[i]
        h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    h = F.relu(conv1x1(m.end_conv_1, F.relu(skip)))
    h = F.relu(conv1x1(m.end_conv_2, h))  # [B, H*D, N, 1]
    h = h.squeeze(-1).view(B, m.horizon, m.head_hidden, N_).permute(0, 1, 3, 2)  # [B, H, N, D]
    dist = m.head(h)
    return dist.mean, dist.stddev


@pytest.mark.parametrize("history,weighted", [(12, False), (5, False), (12, True)])
def test_gwnet_matches_reference_forward(history, weighted):
    data = tiny_data(history, 4)
    m = (make("gwnet", data, edge_weights=True) if weighted else make("gwnet", data)).eval()
    ew = torch.rand(data.edge_index.shape[1], generator=torch.Generator().manual_seed(2)) + 0.1 if weighted else None
    g = torch.Generator().manual_seed(1)
    for bn in m.bn:  # non-trivial running statistics
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    batch = data.batch_at([0, 3, 9])
    with torch.no_grad():
        dist = m(batch, data.edge_index, ew)
        mean, std = reference_gwnet(m, batch, data.edge_index, ew)
    torch.testing.assert_close(dist.mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dist.stddev, std, rtol=1e-4, atol=1e-5)
