"""The shared forecast decoder's anchors: the last reading, and its learned blend with the weekly profile."""

import warnings

import numpy as np
import pandas as pd
import torch

from stmgt.config import model_config
from stmgt.data.windows import PanelData
from stmgt.forecaster import data_info
from stmgt.models import build_model


def _stmgt(data, **kw):
    torch.manual_seed(0)
    model = build_model(model_config("stmgt", hidden=8, heads=2, blocks=1, mixtures=2, **kw), data_info(data))
    with torch.no_grad():  # a head that adds nothing: every component mean is the anchor
        model.decoder.head.output_layer.weight.zero_()
        model.decoder.head.output_layer.bias.view(2, 3)[:, 0].zero_()
    return model.eval()


def _weekly_means_by_pandas(panel, data):
    """The oracle: each road's mean scaled training reading per (day category, 5-minute slot), by pandas; the
    categories of the days the training split holds (this panel's Monday to Wednesday: one)."""
    lo, hi = data.bounds["train"]
    ts = pd.DatetimeIndex(panel.timestamps[lo:hi])
    z = (panel.values[lo:hi, :, 0] - data.scaler.target_loc) / data.scaler.target_scale
    df = pd.DataFrame(np.where(panel.mask[lo:hi, :, 0], z, np.nan))
    key = [np.asarray(data_info(data).day_classes)[ts.dayofweek], ts.hour * 12 + ts.minute // 5]
    return df.groupby(key).mean()  # (category, slot) -> [N]


def test_seasonal_anchor_is_the_weekly_profile_or_the_last_reading_by_its_gate(tiny_panel):
    data = PanelData(tiny_panel, 12, 6)
    model = _stmgt(data, anchor_seasonal=True)
    model.prepare(data)
    oracle = _weekly_means_by_pandas(tiny_panel, data)
    batch = data.batch_at([300, 420])
    ei = data.edge_index
    with torch.no_grad():
        model.decoder.blend.fill_(-30.0)  # gate closed: the profile alone
        seasonal = model(batch, ei).mean  # [B, H, N]
        model.decoder.blend.fill_(30.0)  # gate open: the last reading alone
        last = model(batch, ei).mean
    for b, s in enumerate((300, 420)):
        for h in range(6):
            t = pd.Timestamp(tiny_panel.timestamps[s + 12 + h])
            want = oracle.loc[(data_info(data).day_classes[t.dayofweek], t.hour * 12 + t.minute // 5)].to_numpy()
            got = seasonal[b, h].numpy()
            ok = ~np.isnan(want)
            assert np.allclose(got[ok], want[ok], atol=1e-4)
    x, m = batch.x[..., 0], batch.x_mask
    idx = torch.where(m, torch.arange(12).view(1, 12, 1), -1).amax(1)  # the last observed step of each road
    want_last = torch.gather(x, 1, idx.clamp_min(0).unsqueeze(1)).squeeze(1)
    assert torch.allclose(last, want_last[:, None].expand_as(last), atol=1e-4)


def test_training_sets_the_profile_and_the_run_keeps_it(tiny_panel, tmp_path):
    from stmgt.config import load_config
    from stmgt.training.fit import fit

    cfg = load_config(None, {"model.name": "stmgt", "model.hidden": 8, "model.heads": 2, "model.blocks": 1,
                             "model.anchor_seasonal": True, "train.max_epochs": 1, "train.progress": False,
                             "data.history": 12, "data.horizon": 6})
    run = fit(cfg, tmp_path / "run", panel=tiny_panel)
    data = run.data(tiny_panel)
    oracle = _weekly_means_by_pandas(tiny_panel, data)
    profile = run.model().decoder.profile  # read back from model.safetensors
    classes = data_info(data).day_classes
    for (c, s), row in oracle.iterrows():
        ok = ~row.isna().to_numpy()
        for d in (d for d in range(7) if classes[d] == c):  # every day of the category
            assert np.allclose(profile[d, s].numpy()[ok], row.to_numpy()[ok], atol=1e-4)


def test_while_training_the_profile_leaves_out_the_forecast_steps_own_reading(tiny_panel):
    """A training target's own reading is part of the training profile (all of it where its day of week occurs
    once): while training the anchor reads the profile without it; evaluation reads the whole profile."""
    data = PanelData(tiny_panel, 12, 6)
    info = data_info(data)
    model = _stmgt(data, anchor_seasonal=True, dropout=0.0, drop_edge=0.0)
    model.prepare(data)
    lo, hi = data.bounds["train"]
    ts = pd.DatetimeIndex(tiny_panel.timestamps)
    z = (tiny_panel.values[:, :, 0] - data.scaler.target_loc) / data.scaler.target_scale
    z = np.where(tiny_panel.mask[:, :, 0], z, np.nan)
    cls = np.asarray(info.day_classes)[ts.dayofweek]
    slot = ts.hour * 12 + ts.minute // 5
    starts = [300, 420, hi - 12 - 3]  # the last window's final steps lie past the training split
    batch = data.batch_at(starts)
    with torch.no_grad():
        model.decoder.blend.fill_(-30.0)  # the gate closed: the profile alone
        model.train()
        loo = model.decoder.anchor_of(batch)  # [B, H, N]
        model.eval()
        full = model.decoder.anchor_of(batch)
    for b, s in enumerate(starts):
        for h in range(6):
            t = s + 12 + h
            same = (cls[lo:hi] == cls[t]) & (slot[lo:hi] == slot[t])  # the training readings of this (class, slot)
            rows = z[lo:hi][same]
            want_full = np.nanmean(rows, 0)
            others = np.where(np.arange(lo, hi)[same][:, None] == t, np.nan, rows)  # without step t itself
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a road whose only reading is step t: NaN
                want_loo = np.nanmean(others, 0)
            ok = ~np.isnan(want_loo)
            assert np.allclose(loo[b, h].numpy()[ok], want_loo[ok], atol=1e-4)
            assert np.allclose(full[b, h].numpy()[ok], want_full[ok], atol=1e-4)
            if t >= hi:  # outside the training split nothing is left out
                assert np.allclose(loo[b, h].numpy(), full[b, h].numpy())
    assert not torch.allclose(loo[:2], full[:2])  # inside it the two differ


def test_prepare_starts_the_gate_at_the_least_squares_blend_of_the_training_windows(tiny_panel):
    """Per horizon step and road, the gate's start is the blend of last reading and (left-one-out) profile that
    fits the training targets best: numpy's least squares over every training window, clipped to [0.02, 0.98]."""
    data = PanelData(tiny_panel, 12, 6)
    model = _stmgt(data, anchor_seasonal=True, dropout=0.0, drop_edge=0.0)
    model.prepare(data)
    got = torch.sigmoid(model.decoder.blend).detach().double().numpy()  # [H, N]
    batch = data.batch_at(data.starts["train"])
    with torch.no_grad():
        model.train()
        model.decoder.blend.fill_(-30.0)
        p = model.decoder.anchor_of(batch).double().numpy()  # the profile alone, as while training
        model.decoder.blend.fill_(30.0)
        last = model.decoder.anchor_of(batch).double().numpy()  # the last reading alone
    y = (batch.y.double().numpy() - data.scaler.target_loc) / data.scaler.target_scale
    m = batch.y_mask.numpy()
    for h in range(6):
        for n in range(5):
            ok = m[:, h, n]
            a = (last - p)[ok, h, n][:, None]
            g = np.linalg.lstsq(a, (y - p)[ok, h, n], rcond=None)[0][0]
            assert abs(got[h, n] - np.clip(g, 0.02, 0.98)) < 1e-4, (h, n)
    assert got.std() > 0.01  # it is fitted per step and road, not one number
