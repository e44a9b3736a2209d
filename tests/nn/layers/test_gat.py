import pytest
import torch
from torch_geometric.nn import GATConv, GATv2Conv

from stmgt.nn.layers.gat import EdgePlan, GraphAttention, add_self_loops, gather_src, segment_softmax, segment_sum


def _pair(v2, F=16, C=8, H=4):
    ours = GraphAttention(F, C, H, v2=v2)
    ref = GATv2Conv(F, C, heads=H) if v2 else GATConv(F, C, heads=H)
    ours.load_state_dict({k: v.reshape(ours.state_dict()[k].shape) for k, v in ref.state_dict().items()})
    return ours, ref


@pytest.mark.parametrize("v2", [True, False])
def test_matches_pyg_given_the_same_weights(v2):
    torch.manual_seed(0)
    N, B = 11, 3
    ei = torch.randint(0, N, (2, 40))  # includes self-loops and duplicates, as real edge lists may
    ours, ref = _pair(v2)
    x = torch.randn(B, N, 16)
    out = ours(x, ei)
    expect = torch.stack([ref(x[b], ei) for b in range(B)])
    assert out.shape == (B, N, 32)
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)
    # gradients too
    g1 = torch.autograd.grad(out.square().sum(), ours.lin_l.weight if v2 else ours.lin.weight)[0]
    expect2 = torch.stack([ref(x[b], ei) for b in range(B)])
    g2 = torch.autograd.grad(expect2.square().sum(), ref.lin_l.weight if v2 else ref.lin.weight)[0]
    torch.testing.assert_close(g1, g2, atol=1e-4, rtol=1e-4)


def test_matches_pyg_on_the_replicated_graph_of_the_design_document():
    torch.manual_seed(1)
    N, B = 9, 4
    ei = torch.randint(0, N, (2, 20))
    ours, ref = _pair(True)
    x = torch.randn(B, N, 16)
    big = torch.cat([ei + b * N for b in range(B)], 1)
    expect = ref(x.reshape(B * N, 16), big).view(B, N, -1)
    torch.testing.assert_close(ours(x, ei), expect, atol=1e-5, rtol=1e-5)


def test_attention_sums_to_one_per_target_and_self_loops_added():
    N = 6
    ei = torch.tensor([[0, 1, 2, 2], [1, 2, 3, 2]])
    loops = add_self_loops(ei, N)
    assert loops.shape[1] == 3 + N  # the existing self-loop 2->2 is replaced
    layer = GraphAttention(8, 4, 2)
    _, (ei2, alpha) = layer(torch.randn(5, N, 8), ei, return_attention=True)
    sums = torch.zeros(5, N, 2).index_add_(1, ei2[1], alpha)
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_segment_softmax_against_dense_softmax():
    plan = EdgePlan(torch.tensor([[1, 1, 0], [0, 1, 1]]), 2)  # with loops: 0->0, 1->0 | 0->1, 1->1
    assert plan.dst.tolist() == [0, 0, 1, 1]
    logits = torch.randn(2, 4, 3)
    out = segment_softmax(logits, plan)
    torch.testing.assert_close(out[:, :2], logits[:, :2].softmax(1))
    torch.testing.assert_close(out[:, 2:], logits[:, 2:].softmax(1))


def test_gather_and_segment_sum_gradients_equal_index_ops():
    torch.manual_seed(0)
    N = 7
    plan = EdgePlan(torch.randint(0, N, (2, 25)), N)
    x = torch.randn(3, N, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, plan.src.numel(), 4, dtype=torch.float64)
    ours = segment_sum(gather_src(x, plan) * w, plan)
    ref = torch.zeros(3, N, 4, dtype=torch.float64).index_add(1, plan.dst, x.index_select(1, plan.src) * w)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    assert torch.autograd.gradcheck(lambda t: segment_sum(gather_src(t, plan), plan), (x,))


def test_drop_edge_only_in_training_and_keeps_self_loops():
    torch.manual_seed(0)
    N = 5
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    layer = GraphAttention(4, 4, 1, drop_edge=1.0)  # every real edge dropped
    x = torch.randn(3, N, 4)
    layer.train()
    _, (ei2, alpha) = layer(x, ei, return_attention=True)
    real = ei2[0] != ei2[1]
    assert torch.all(alpha[:, real] == 0)
    assert torch.allclose(alpha[:, ~real], torch.ones_like(alpha[:, ~real]))
    layer.eval()
    _, (_, alpha) = layer(x, ei, return_attention=True)
    assert (alpha[:, real] > 0).all()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_kernels_equal_the_pytorch_path_in_training(dtype, tol, threads):
    """The compiled edge kernels (scores and weighted sums) give the PyTorch path's outputs and every
    gradient, with DropEdge and attention dropout drawn from the same random stream."""
    from stmgt.nn.layers.gat import fused_kernels_available

    if not fused_kernels_available():
        pytest.skip("the graph-attention kernel cannot be built here (no g++/ninja)")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        N, B = 23, 5
        ei = torch.randint(0, N, (2, 90))
        layer = GraphAttention(12, 6, 3, dropout=0.3, drop_edge=0.2).to(dtype).train()
        x = torch.randn(B, N, 12, dtype=dtype, requires_grad=True)
        w = torch.randn(B, N, 18, dtype=dtype)
        results = []
        for fused in (False, True):
            layer.fused = fused
            torch.manual_seed(1)
            out, (_, alpha) = layer(x, ei, return_attention=True)
            grads = torch.autograd.grad((out * w).sum(), [x, *layer.parameters()])
            results.append((out, alpha, grads))
        (o1, a1, g1), (o2, a2, g2) = results
        torch.testing.assert_close(o2, o1, atol=tol, rtol=tol)
        torch.testing.assert_close(a2, a1, atol=tol, rtol=tol)
        for p, q in zip(g2, g1):
            torch.testing.assert_close(p, q, atol=tol * 10, rtol=tol * 10)
    finally:
        torch.set_num_threads(before)


def test_fused_kernels_pass_gradcheck():
    from stmgt.nn.layers.gat import _FusedAggregate, _FusedScore, fused_kernels_available

    if not fused_kernels_available():
        pytest.skip("the graph-attention kernel cannot be built here (no g++/ninja)")
    torch.manual_seed(0)
    plan = EdgePlan(torch.randint(0, 6, (2, 15)), 6)
    xl = torch.randn(2, 6, 8, dtype=torch.float64, requires_grad=True)
    xr = torch.randn(2, 6, 8, dtype=torch.float64, requires_grad=True)
    att = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: _FusedScore.apply(a, b, c, plan.src, plan.dst, 2, 0.2),
                                    (xl, xr, att))
    alpha = torch.rand(2, plan.src.numel(), 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _FusedAggregate.apply(a, b, plan.src, plan.dst), (alpha, xl))


def _edge_pair(v2, F=16, C=8, H=4, **kw):
    ours = GraphAttention(F, C, H, v2=v2, edge_dim=1, **kw)
    ref = GATv2Conv(F, C, heads=H, edge_dim=1) if v2 else GATConv(F, C, heads=H, edge_dim=1)
    ours.load_state_dict({k: v.reshape(ours.state_dict()[k].shape) for k, v in ref.state_dict().items()})
    return ours, ref


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("v2", [True, False])
def test_edge_weights_match_pyg_edge_dim_1(v2, fused):
    """Edge weights [E] as a 1-dim edge attribute: PyG's GATConv/GATv2Conv(edge_dim=1) numbers and
    gradients, self-loops filled with the mean incoming weight (nodes without in-edges: 0)."""
    torch.manual_seed(0)
    N, B = 11, 3
    ei = torch.randint(0, N - 1, (2, 40))  # self-loops and duplicates; node N-1 has no incoming edge
    w = torch.rand(40) * 2
    ours, ref = _edge_pair(v2, fused=fused)
    assert set(ours.state_dict()) == set(ref.state_dict())
    x = torch.randn(B, N, 16)
    out, (ei2, alpha) = ours(x, ei, w, return_attention=True)
    expect = [ref(x[b], ei, w, return_attention_weights=True) for b in range(B)]
    torch.testing.assert_close(out, torch.stack([o for o, _ in expect]), atol=1e-5, rtol=1e-5)
    # the same attention per (edge, head): compare as dicts keyed by (src, dst), self-loops included
    # (PyG adds them after the kept edges, in node order; ours sorts by target)
    ref_ei, ref_alpha = expect[0][1]
    key = ei2[0] * N + ei2[1]
    ref_key = ref_ei[0] * N + ref_ei[1]
    for k in (ei2[0] == ei2[1]).nonzero().flatten():  # self-loops are unique on both sides
        j = (ref_key == key[k]).nonzero().item()
        torch.testing.assert_close(alpha[0, k], ref_alpha[j], atol=1e-5, rtol=1e-5)
    params = ["lin_edge.weight", "lin_l.weight" if v2 else "lin.weight"] + ([] if v2 else ["att_edge"])
    mine, theirs = dict(ours.named_parameters()), dict(ref.named_parameters())
    g1 = torch.autograd.grad(out.square().sum(), [mine[p] for p in params])
    expect2 = torch.stack([ref(x[b], ei, w) for b in range(B)])
    g2 = torch.autograd.grad(expect2.square().sum(), [theirs[p] for p in params])
    for p, a, b in zip(params, g1, g2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=p)


@pytest.mark.parametrize("v2", [True, False])
def test_edge_dim_without_weights_uses_unit_weights_and_weights_need_edge_dim(v2):
    torch.manual_seed(0)
    N = 8
    ei = torch.randint(0, N, (2, 25))
    layer = GraphAttention(6, 4, 2, v2=v2, edge_dim=1).eval()
    x = torch.randn(2, N, 6)
    torch.testing.assert_close(layer(x, ei), layer(x, ei, torch.ones(25)))
    assert not torch.allclose(layer(x, ei), layer(x, ei, torch.rand(25) * 3))
    with pytest.raises(ValueError, match="edge_dim"):
        GraphAttention(6, 4, 2, v2=v2)(x, ei, torch.ones(25))


@pytest.mark.parametrize("v2", [True, False])
def test_drop_edge_drops_each_edge_with_its_own_weight(v2):
    """With DropEdge, each graph of the batch equals PyG on its kept edges with their own weights
    (and the self-loops' mean weight over all incoming edges, which DropEdge does not change)."""
    torch.manual_seed(0)
    N, B, E = 10, 4, 30
    ei = torch.randint(0, N, (2, E))
    w = torch.rand(E) * 2 + 0.1
    ours, ref = _edge_pair(v2, drop_edge=0.4)
    plan = ours.plan(ei, N)
    fill = plan.edge_attr(w)[plan.is_loop].view(-1)  # [N] the self-loops' weights, node order
    ours.train()
    x = torch.randn(B, N, 16)
    out, (ei2, alpha) = ours(x, ei, w, return_attention=True)
    w2 = plan.edge_attr(w).view(-1)  # our weight of each planned edge
    real = ei2[0] != ei2[1]
    ref.add_self_loops = False
    dropped = 0
    for b in range(B):
        kept = real & (alpha[b, :, 0] > 0)
        dropped += int((real & (alpha[b, :, 0] == 0)).sum())
        loops = torch.arange(N).expand(2, N)
        sub = torch.cat([ei2[:, kept], loops], 1)
        sub_w = torch.cat([w2[kept], fill])
        torch.testing.assert_close(out[b], ref(x[b], sub, sub_w), atol=1e-5, rtol=1e-5)
    assert dropped > 0
