"""The fused GELU + dropout kernel against PyTorch's GELU, its autograd and a plain dropout."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from stmgt.nn.layers.gelu_dropout import GeluDropout, gelu_dropout


def test_without_dropout_or_in_evaluation_it_is_torchs_gelu():
    x = torch.randn(50, 7)
    torch.testing.assert_close(gelu_dropout(x, 0.0), F.gelu(x), rtol=0, atol=0)
    torch.testing.assert_close(GeluDropout(0.3).eval()(x), F.gelu(x), rtol=0, atol=0)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_values_and_gradients_equal_gelu_times_its_mask(p):
    torch.manual_seed(0)
    x = torch.randn(300, 64, dtype=torch.float64, requires_grad=True)
    y = gelu_dropout(x, p)
    keep = (y != 0).double()  # GELU(x) is 0 only at x = 0
    ref = F.gelu(x) * keep / (1 - p)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gr,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx, gr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_drop_rate_is_p(p):
    torch.manual_seed(1)
    n = 1_000_000
    rate = (gelu_dropout(torch.rand(n) + 0.1, p) == 0).double().mean().item()
    assert abs(rate - p) < 5 * (p * (1 - p) / n) ** 0.5


def test_masks_follow_torchs_seed_differ_between_calls_and_not_with_threads():
    x = torch.rand(4096, 96) + 0.1
    torch.manual_seed(5)
    a, b = gelu_dropout(x, 0.3), gelu_dropout(x, 0.3)
    assert not torch.equal(a == 0, b == 0)  # a fresh mask per call
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.manual_seed(5)
        a1 = gelu_dropout(x, 0.3)
        torch.set_num_threads(2)
        torch.manual_seed(5)
        a2 = gelu_dropout(x, 0.3)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, a1) and torch.equal(a1, a2)
    # neighbouring elements are independent: the rate of kept pairs is (1 - p)^2
    k = (a != 0).flatten().double()
    assert abs((k[:-1] * k[1:]).mean().item() - 0.49) < 0.01


def test_bfloat16_is_the_float_result_rounded():
    torch.manual_seed(2)
    x = (torch.randn(20000) * 3).bfloat16()
    y = gelu_dropout(x, 0.2)
    assert y.dtype == torch.bfloat16
    keep = y != 0
    ref = (F.gelu(x.float()) * keep / 0.8).bfloat16()
    # one bf16 rounding step apart; the far negative tail (GELU ~ -1e-6) differs by the erf's float error
    torch.testing.assert_close(y.float(), ref.float(), rtol=2 ** -7, atol=1e-6)


def test_activation_checkpointing_replays_the_mask():
    w = torch.randn(32, 32, dtype=torch.float64, requires_grad=True)
    x = torch.randn(64, 32, dtype=torch.float64)

    def f(x):
        return gelu_dropout(x @ w, 0.3) @ w

    torch.manual_seed(3)
    (g_plain,) = torch.autograd.grad(f(x).square().sum(), w)
    torch.manual_seed(3)
    (g_ck,) = torch.autograd.grad(checkpoint(f, x, use_reentrant=False).square().sum(), w)
    torch.testing.assert_close(g_plain, g_ck, rtol=0, atol=0)


def test_the_unfused_path_is_gelu_then_dropout():
    torch.manual_seed(4)
    x = torch.rand(10000) + 0.1
    y = GeluDropout(0.25, fused=False)(x)
    keep = y != 0
    torch.testing.assert_close(y, F.gelu(x) * keep / 0.75)
    assert abs((~keep).double().mean().item() - 0.25) < 0.03


def test_without_a_compiler_it_warns_once_and_uses_pytorch(monkeypatch):
    import stmgt.kernels
    from stmgt.errors import ConfigError
    from stmgt.nn.layers import gelu_dropout as mod

    def broken():
        raise ConfigError("the compiled GELU-dropout could not be built (no g++)")

    monkeypatch.setattr(stmgt.kernels, "gelu_dropout_extension", broken)
    mod.fused_kernel_available.cache_clear()
    try:
        x = torch.rand(5000) + 0.1
        with pytest.warns(UserWarning, match="no g\\+\\+.*PyTorch's GELU and dropout"):
            y = gelu_dropout(x, 0.2)
        keep = y != 0
        torch.testing.assert_close(y, F.gelu(x) * keep / 0.8)
    finally:
        mod.fused_kernel_available.cache_clear()
