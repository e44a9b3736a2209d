"""Two CPU processes (gloo) train like one process at the same global batch."""

import pandas as pd
import pytest
from torch.utils.data import DataLoader, DistributedSampler

from stmgt.config import load_config
from stmgt.data.windows import PanelData, WindowDataset
from stmgt.training.fit import fit

pytestmark = pytest.mark.slow


def _cfg(devices: int, batch: int):
    return load_config(None, {
        "data.synthetic.nodes": 6, "data.synthetic.days": 1.5, "data.synthetic.seed": 1,
        "model.hidden": 8, "model.heads": 2, "model.blocks": 1, "model.mixtures": 2,
        "model.dropout": 0.0, "model.drop_edge": 0.0,  # no randomness that differs between processes
        "train.batch_size": batch, "train.max_epochs": 2, "train.progress": False, "train.devices": devices,
        "train.strategy": "ddp_spawn" if devices > 1 else "auto", "train.num_threads": 1, "train.seed": 0,
        "train.limit_train_batches": 17,  # full global batches only (DDP pads the last one)
    })


def test_two_processes_match_one_process_at_the_same_global_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTER_PORT", "29533")
    orig = PanelData.loader

    def single_process_order(self, split, shuffle=None, batch_size=None, generator=None):
        # Lightning gives each of the K processes every K-th window of one seeded permutation per epoch;
        # the same permutation in one process makes the global batches identical
        if split != "train":
            return orig(self, split, shuffle, batch_size, generator)
        ds = WindowDataset(self.starts[split])
        return DataLoader(ds, batch_size=batch_size or self.batch_size, collate_fn=self.collate,
                          sampler=DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0))

    monkeypatch.setattr(PanelData, "loader", single_process_order)
    one = fit(_cfg(1, 16), tmp_path / "one")
    monkeypatch.setattr(PanelData, "loader", orig)
    two = fit(_cfg(2, 8), tmp_path / "two")
    h1 = pd.read_csv(one.dir / "history.csv")
    h2 = pd.read_csv(two.dir / "history.csv")
    assert len(h1) == len(h2) == 2
    # gradients averaged over the two processes: the same updates, so the same training losses
    assert h1["train_loss"].tolist() == pytest.approx(h2["train_loss"].tolist(), rel=1e-3)
    assert h1["val_mae"].tolist() == pytest.approx(h2["val_mae"].tolist(), rel=1e-2)
