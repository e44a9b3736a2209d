"""``train.ema``: validation, checkpoints and the run's weights use an exponential moving average."""

import pytest
import torch

from stmgt.config import TrainConfig
from stmgt.training.module import ForecastTask


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.register_buffer("seen", torch.zeros(()))


def test_the_average_follows_the_warmed_up_decay_step_by_step():
    model = Tiny()
    task = ForecastTask(model, torch.zeros(2, 0, dtype=torch.long), 0.0, 1.0, TrainConfig(ema=0.9))
    expected = torch.zeros(3)  # the average starts at the initial weights
    for step in range(40):
        with torch.no_grad():
            model.w.copy_(torch.randn(3))
            model.seen.fill_(step)
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * model.w.detach()
        task.on_train_batch_end(None, None, step)
        torch.testing.assert_close(task.ema.w, expected)
        assert float(task.ema.seen) == step  # buffers are copied, not averaged
    assert not task.ema.w.requires_grad and task.evaluated is task.ema


def test_without_ema_the_trained_weights_are_evaluated():
    model = Tiny()
    task = ForecastTask(model, torch.zeros(2, 0, dtype=torch.long), 0.0, 1.0, TrainConfig())
    task.on_train_batch_end(None, None, 0)
    assert task.ema is None and task.evaluated is model


@pytest.mark.slow
def test_a_run_with_ema_keeps_the_averaged_weights_that_validation_scored(tmp_path):
    from stmgt.config import load_config
    from stmgt.forecaster import TrainedRun
    from stmgt.training.fit import fit

    cfg = load_config(None, {"data.synthetic.nodes": 5, "data.synthetic.days": 2, "model.hidden": 8, "model.heads": 2,
                             "model.blocks": 1, "train.progress": False, "train.batch_size": 64,
                             "train.max_epochs": 2, "train.ema": 0.9, "train.num_threads": 1})
    fit(cfg, tmp_path / "run")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    kept = TrainedRun(tmp_path / "run").model().state_dict()
    for k, v in kept.items():
        torch.testing.assert_close(v, ckpt["ema." + k])
    assert any(not torch.equal(ckpt["ema." + k], ckpt["model." + k]) for k in kept)
