import torch

from stmgt.nn.blocks.gated_fusion import GatedFusion


def test_gate_is_a_sigmoid_of_one_linear_map_of_both_branches():
    torch.manual_seed(0)
    f = GatedFusion(8).double()
    s = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    t = torch.randn(2, 5, 3, 8, dtype=torch.float64).transpose(1, 2)  # a strided view, as the temporal branch gives
    fused, alpha = f(s, t, return_attention=True)
    ref = torch.sigmoid(torch.cat([s, t], -1) @ f.gate.weight.T + f.gate.bias)  # GMAN's gate on the concatenation
    torch.testing.assert_close(alpha, ref)
    torch.testing.assert_close(fused, ref * s + (1 - ref) * t)
