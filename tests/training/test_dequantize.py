"""``train.dequantize``: the training targets get uniform noise of the given width (data units), nothing else."""

import pytest
import torch

import stmgt.training.module as module
from stmgt.config import TrainConfig
from stmgt.testing import make_batch
from stmgt.training.module import ForecastTask


class Constant(torch.nn.Module):
    """A forecaster whose distribution does not matter here: the loss is intercepted."""

    def forward(self, batch, edge_index, edge_weight=None):
        return None


@pytest.mark.parametrize("width", [0.0, 1.0, 3.0])
def test_training_targets_are_dequantized_by_uniform_noise_of_the_width(monkeypatch, width):
    seen = {}

    def loss(dist, y, mask, *args):
        seen["y"] = y
        return torch.zeros(()), {"nll": torch.zeros(())}

    monkeypatch.setattr(module, "mixture_loss", loss)
    loc, scale = 2.0, 4.0
    task = ForecastTask(Constant(), torch.zeros(2, 0, dtype=torch.long), loc, scale, TrainConfig(dequantize=width))
    monkeypatch.setattr(task, "log", lambda *a, **k: None)
    b = make_batch(B=64, H=12, N=9)
    b.y = torch.randint(0, 5, b.y.shape).float()  # counts
    torch.manual_seed(0)
    task.training_step(b, 0)
    noise = seen["y"] * scale + loc - b.y  # back in data units
    if width == 0:
        assert torch.equal(noise, torch.zeros_like(noise))
        return
    assert noise.min() >= -width / 2 - 1e-5 and noise.max() < width / 2 + 1e-5
    # uniform: mean 0, variance w^2 / 12
    assert abs(noise.mean().item()) < 0.05 * width
    assert noise.var().item() == pytest.approx(width**2 / 12, rel=0.05)
