import pytest
import torch

from stmgt.config import model_config
from stmgt.errors import ConfigError
from stmgt.models import DataInfo, build_model
from stmgt.testing import make_batch, ring_graph


@pytest.mark.parametrize("T, H", [(12, 12), (24, 6), (5, 9), (1, 3)])
@pytest.mark.parametrize("weather", ["cross", "document", "none"])
def test_output_shapes_for_any_history_and_horizon(T, H, weather):
    torch.manual_seed(0)
    N = 7
    m = build_model(model_config("stmgt", hidden=16, heads=2, blocks=2, weather=weather),
                    DataInfo(num_nodes=N, weather_dim=3, history=T, horizon=H))
    b = make_batch(B=3, T=T, H=H, N=N)
    d = m(b, ring_graph(N))
    assert d.batch_shape == (3, H, N) and d.means.shape == (3, H, N, 5)
    assert torch.isfinite(d.mean).all() and (d.stds >= 0.01).all()
    loss = -d.log_prob(b.y).mean()
    loss.backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None]
    assert not dead, dead


def test_block_shapes_and_gate_details():
    torch.manual_seed(0)
    N, T = 6, 8
    m = build_model(model_config("stmgt", hidden=16, heads=4, blocks=3),
                    DataInfo(num_nodes=N, weather_dim=3, history=T, horizon=4))
    m.keep_details = True
    m.eval()
    m(make_batch(B=2, T=T, H=4, N=N), ring_graph(N))
    assert len(m.details["gate"]) == 3
    for alpha in m.details["gate"]:
        assert alpha.shape == (2, T, N, 16) and (alpha >= 0).all() and (alpha <= 1).all()
    ei, att = m.details["spatial_attention"][0]
    assert att.shape == (2 * T, ei.shape[1], 4)
    assert m.details["weather_attention"].shape == (2, 4 * N, T)  # [B, H*N, L]: the history's weather
    m.keep_details = False
    m.details = {}
    m(make_batch(B=2, T=T, H=4, N=N), ring_graph(N))
    assert m.details == {}


def test_spatial_branch_off_ignores_the_graph_and_weather_off_ignores_weather():
    torch.manual_seed(0)
    N = 5
    m = build_model(model_config("stmgt", hidden=16, heads=2, blocks=1, spatial=False, weather="none"),
                    DataInfo(num_nodes=N, weather_dim=3)).eval()
    b = make_batch(N=N)
    a = m(b, ring_graph(N)).mean
    b.weather = torch.randn_like(b.weather)
    torch.testing.assert_close(a, m(b, torch.zeros(2, 0, dtype=torch.long)).mean)


def test_missing_inputs_are_flagged_to_the_model():
    torch.manual_seed(0)
    N = 4
    m = build_model(model_config("stmgt", hidden=16, heads=2, blocks=1), DataInfo(num_nodes=N, weather_dim=0)).eval()
    b = make_batch(N=N, W=0)
    b.x[:, 3] = 0.0
    b.x_mask[:, 3] = True
    a = m(b, ring_graph(N)).mean
    b.x_mask[:, 3] = False  # same zeros, now marked missing
    assert not torch.allclose(a, m(b, ring_graph(N)).mean)


def test_activation_checkpointing_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    N = 6
    info = DataInfo(num_nodes=N, weather_dim=3)
    plain = build_model(model_config("stmgt", hidden=16, heads=2, blocks=2), info)
    ck = build_model(model_config("stmgt", hidden=16, heads=2, blocks=2, checkpoint=True), info)
    ck.load_state_dict(plain.state_dict())
    b = make_batch(N=N)
    grads = []
    for m in (plain, ck):
        torch.manual_seed(1)  # the same dropout and DropEdge draws
        d = m(b, ring_graph(N))
        loss = -d.log_prob(b.y).mean()
        loss.backward()
        grads.append((d.mean.detach(), [p.grad.clone() for p in m.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for g1, g2 in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-5)


def test_chunked_checkpointing_equals_the_plain_model_without_dropout():
    torch.manual_seed(0)
    N = 5
    info = DataInfo(num_nodes=N, weather_dim=3)
    cfg = dict(hidden=16, heads=2, blocks=2, dropout=0.0, drop_edge=0.0)
    plain = build_model(model_config("stmgt", **cfg), info)
    ck = build_model(model_config("stmgt", **cfg, checkpoint=True, checkpoint_chunk=1), info)
    ck.load_state_dict(plain.state_dict())
    b = make_batch(B=3, N=N)
    out = []
    for m in (plain, ck):
        d = m(b, ring_graph(N))
        (-d.log_prob(b.y).mean()).backward()
        out.append((d.mean.detach(), [p.grad.clone() for p in m.parameters()]))
    torch.testing.assert_close(out[0][0], out[1][0], atol=1e-5, rtol=1e-5)
    for g1, g2 in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-5)
    for m in (plain, ck):  # the gates of the chunks are joined; the spatial attention needs one chunk
        m.keep_details = True
        m(b, ring_graph(N))
    for g1, g2 in zip(plain.details["gate"], ck.details["gate"]):
        torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-5)
    assert ck.details["spatial_attention"] == [None, None]


def test_horizon_calendar_gives_each_forecast_step_its_own_clock():
    """Two windows identical in every reading but whose forecast steps fall at other times of day get
    different forecasts only with horizon_calendar (the history's calendar is made equal too)."""
    torch.manual_seed(0)
    N = 5
    b = make_batch(B=2, T=4, H=3, N=N, W=0)
    b.x[1], b.x_mask[1] = b.x[0], b.x_mask[0]
    b.tod[:, :4] = 0.25
    b.dow[:] = 2
    b.tod[0, 4:], b.tod[1, 4:] = 0.30, 0.80
    ei = ring_graph(N)
    for on in (False, True):
        torch.manual_seed(0)
        cfg = model_config("stmgt", hidden=8, heads=2, blocks=1, horizon_calendar=on, dropout=0.0, drop_edge=0.0)
        m = build_model(cfg,
                        DataInfo(num_nodes=N, history=4, horizon=3, weather_dim=0)).eval()
        mean = m(b, ei).mean
        assert mean.shape == (2, 3, N)
        assert torch.allclose(mean[0], mean[1]) is (not on)


def test_decoder_flat_builds_the_flat_projection():
    from stmgt.nn.blocks.horizon_projection import FlatHorizonProjection

    m = build_model(model_config("stmgt", hidden=8, heads=2, blocks=1, decoder="flat"), DataInfo(num_nodes=4, history=5,
                                                                                         horizon=3))
    assert isinstance(m.decoder.projection, FlatHorizonProjection)


def test_window_embedding_is_refused_by_stmamba():
    with pytest.raises(ConfigError, match="window_embedding: not a setting of stmamba"):
        build_model(model_config("stmamba", hidden=8, heads=2, window_embedding=True), DataInfo(num_nodes=3))


def test_input_norm_off_removes_the_embedding_norm():
    m = build_model(model_config("stmgt", hidden=8, heads=2, blocks=1, input_norm=False), DataInfo(num_nodes=3))
    assert isinstance(m.embedding.norm, torch.nn.Identity)


@pytest.mark.parametrize("spatial_blocks, reach", [(0, 0), (1, 1), (2, 2), (None, 3)])
def test_spatial_blocks_bound_how_many_hops_a_reading_travels(spatial_blocks, reach):
    # a path graph 0-1-...-5: the flat decoder and the head are per road and weather is off, so a change to
    # road 0's history reaches road k only through k graph-attention layers
    torch.manual_seed(0)
    N = 6
    path = torch.tensor([[i for i in range(N - 1)] + [i + 1 for i in range(N - 1)],
                         [i + 1 for i in range(N - 1)] + [i for i in range(N - 1)]])
    m = build_model(model_config("stmgt", hidden=16, heads=2, blocks=3, spatial_blocks=spatial_blocks,
                                 weather="none", fused_attention=False), DataInfo(num_nodes=N)).eval()
    assert [b.spatial is not None for b in m.blocks] == [i < reach for i in range(3)]
    b = make_batch(N=N)
    a = m(b, path).mean
    b.x = b.x.clone()
    b.x[:, :, 0] += 1.0
    changed = ((m(b, path).mean - a).abs() > 1e-6).flatten(0, 1).any(0)  # [N]
    assert changed.tolist() == [k <= reach for k in range(N)]
