"""The ``one_cycle`` learning-rate schedule: warm-up, one cosine decay, the floor."""

import math

import pytest
import torch

from stmgt.training.module import one_cycle


def test_one_cycle_warms_up_linearly_then_decays_by_a_cosine_to_the_floor():
    lr, floor, warm, cycle = 2e-3, 1e-5, 10, 110
    f = one_cycle(lr, floor, warm, cycle)
    assert f(0) * lr == pytest.approx(lr / 25)
    assert f(5) * lr == pytest.approx(lr / 25 + (lr - lr / 25) / 2)  # half-way up, linearly
    assert f(warm) * lr == pytest.approx(lr)
    assert f(warm + 50) * lr == pytest.approx((lr + floor) / 2)  # the cosine's midpoint
    quarter = floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi / 4))
    assert f(warm + 25) * lr == pytest.approx(quarter)
    assert f(cycle) * lr == pytest.approx(floor) and f(cycle + 1000) * lr == pytest.approx(floor)
    rates = [f(s) for s in range(warm, cycle + 1)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # never a restart


def test_one_cycle_steps_an_adamw_optimizer_per_batch_through_lambda_lr():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([w], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, one_cycle(1e-3, 0.0, 4, 20))
    seen = []
    for _ in range(24):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(4e-5) and max(seen) == pytest.approx(1e-3) and seen.index(max(seen)) == 4
    assert seen[-1] == pytest.approx(0.0)


@pytest.mark.slow
def test_training_with_one_cycle_records_the_schedule_in_history(tmp_path):
    import csv

    from stmgt.config import load_config
    from stmgt.training.fit import fit

    cfg = load_config(None, {"data.synthetic.nodes": 5, "data.synthetic.days": 2, "model.hidden": 8, "model.heads": 2,
                             "model.blocks": 1, "train.progress": False, "train.batch_size": 64,
                             "train.max_epochs": 4, "train.schedule": "one_cycle", "train.warmup_epochs": 1,
                             "train.lr": 2e-3, "train.eta_min": 0.0, "train.num_threads": 1})
    fit(cfg, tmp_path / "run")
    lrs = [float(r["lr"]) for r in csv.DictReader((tmp_path / "run" / "history.csv").open())]
    assert len(lrs) == 4
    assert lrs[0] == pytest.approx(2e-3, rel=0.05)  # the end of the warm-up epoch: the peak
    assert lrs[0] > lrs[1] > lrs[2] > lrs[3] and lrs[3] == pytest.approx(0.0, abs=1e-9)
