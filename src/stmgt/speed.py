"""``stmgt speed``: training and inference speed, FLOPs and memory of a model on a scaled city.

The graph is the synthetic city's road graph scaled to ``N`` nodes (about 2.3 directed edges
per node); inputs are random in the model's layout with 3 weather covariates. One training
step is AdamW with the mixture loss and gradient clipping, as in training. A model that is not
trained (``model.trainable`` False: the statistical baselines) is fitted once on a random panel of
the same graph instead, and only its inference is timed.

Figures reported:

* ``params``; ``train_samples_per_s`` and ``infer_samples_per_s`` at batch ``B``;
  ``infer_latency_ms_b1`` (one sample);
* ``peak_memory_mb``: the process's peak resident memory (CPU) or the peak allocated GPU memory;
* ``train_gflop_per_sample`` from ``torch.utils.flop_counter`` and ``achieved_gflops``
  (that times the training samples per second);
* ``peak_gflops``: a large matrix multiply's measured rate in the run's precision (float32, or
  bfloat16 under ``bf16-mixed``) on the same threads, and ``fraction_of_peak`` = achieved / peak.

``trainable`` says whether the model is trained; where it is not, the training figures
(:data:`TRAIN_KEYS`) are None.
"""

from __future__ import annotations

import gc
import math
import resource
import time

import torch

from stmgt.config import ModelConfig, model_config, settings_of
from stmgt.errors import ConfigError
from stmgt.models import DataInfo, build_model
from stmgt.runtime import keep_freed_memory
from stmgt.testing import make_batch
from stmgt.training.loss import mixture_loss


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, device: str = "cpu", dtype=torch.float32) -> float:
    """Measured matrix-multiply throughput (GFLOP/s) of this machine/device in ``dtype`` (float32 or
    bfloat16): the machine's practical peak for that precision."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


TRAIN_KEYS = ("train_step_ms", "train_samples_per_s", "train_gflop_per_sample", "achieved_gflops",
              "fraction_of_peak")
"""The figures of a training step: None for a model that is not trained."""

OPTION_SETTINGS = {"checkpoint": {"checkpoint": True, "checkpoint_chunk": 1}}
"""``stmgt speed``'s model-specific options: option -> the model settings it sets (only models whose
settings have the option's name take it)."""


def option_settings(model_name: str, **options: bool) -> dict:
    """The model settings that the switched-on model-specific options (:data:`OPTION_SETTINGS`) ask for.

    Raises:
        ConfigError: an option is on for a model without that setting (``--checkpoint`` on gru).
    """
    from stmgt.registry import config_class

    fields = config_class(model_name).model_fields
    settings = {}
    for option, on in options.items():
        if not on:
            continue
        if option not in fields:
            flag = "--" + option.replace("_", "-")
            raise ConfigError(f"{flag}: the {model_name} model has no {option} setting (models with one:"
                              f" {', '.join(settings_of(option))}); drop {flag} for {model_name}")
        settings.update(OPTION_SETTINGS[option])
    return settings


def _fit_on_random(model, graph, history: int, horizon: int, seed: int = 0) -> None:
    """Fit a statistical model on a random 5-minute panel over ``graph`` with 3 covariates: a week, or
    more where the history is long (the validation split must hold one window)."""
    import numpy as np

    from stmgt.data.panel import Panel
    from stmgt.data.windows import PanelData

    rng = np.random.default_rng(seed)
    steps = max(7 * 288, 12 * (history + horizon))
    panel = Panel(values=rng.standard_normal((steps, graph.num_nodes), dtype=np.float32),
                  timestamps=np.datetime64("2024-01-01T00:00") + np.arange(steps) * np.timedelta64(5, "m"),
                  edge_index=graph.edge_index, edge_weight=graph.edge_weight,
                  covariates=rng.standard_normal((steps, 3), dtype=np.float32),
                  covariate_names=["c0", "c1", "c2"], name="random")
    model.fit(PanelData(panel, history, horizon))


def _round(x: float, digits: int) -> float:
    """``x`` to ``digits`` decimals, or to 3 significant figures where that would show fewer (a tiny model's
    GFLOP per sample is not 0)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, max(digits, 2 - math.floor(math.log10(abs(x)))))


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(model_name: str = "stmgt", nodes: int = 62, batch: int = 32, history: int = 12, horizon: int = 12,
          device: str = "cpu", steps: int = 5, precision: str = "32", compile: bool = False,
          cfg: ModelConfig | None = None, checkpoint: bool = False, keep_memory: bool = True) -> dict:
    """Measure one model configuration; returns the figures listed in the module docstring.

    ``cfg`` (default: ``model_name``'s defaults) is the model's settings; ``checkpoint`` switches on
    activation checkpointing (a setting of STMGT's only). ``keep_memory`` keeps freed memory for
    reuse as training does (:mod:`stmgt.runtime`).

    Raises:
        ConfigError: ``checkpoint`` for a model without that setting.
    """
    from stmgt.data.synthetic import synthetic_graph

    name = cfg.name if cfg is not None else model_name
    settings = option_settings(name, checkpoint=checkpoint)
    if cfg is None:
        cfg = model_config(name, **settings)
    elif settings:
        cfg = type(cfg).model_validate({**cfg.model_dump(), **settings})
    if keep_memory:
        keep_freed_memory()

    torch.manual_seed(0)
    info = DataInfo(num_nodes=nodes, weather_dim=3, history=history, horizon=horizon)
    model = build_model(cfg, info)
    graph = synthetic_graph(nodes, seed=0)
    if not model.trainable:
        _fit_on_random(model, graph, history, horizon)
    model = model.to(device)
    ei = torch.from_numpy(graph.edge_index).to(device)
    ew = torch.from_numpy(graph.edge_weight).to(device)  # read only by models with edge_weights on
    b = make_batch(B=batch, T=history, H=horizon, N=nodes).to(device)
    b1 = make_batch(B=1, T=history, H=horizon, N=nodes).to(device)
    fwd = torch.compile(model) if compile else model
    amp = (torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)
           if precision == "bf16-mixed" else torch.autocast("cpu", enabled=False))
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    train = _time_training(model, fwd, amp, b, b1, ei, ew, device, steps) if model.trainable else None
    model.eval()
    with torch.inference_mode(), amp:
        fwd(b, ei, ew)
        _sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            _ = fwd(b, ei, ew).mean
        _sync(device)
        infer_s = (time.perf_counter() - t) / steps
        fwd(b1, ei, ew)
        t = time.perf_counter()
        for _ in range(steps):
            _ = fwd(b1, ei, ew).mean
        _sync(device)
        lat = (time.perf_counter() - t) / steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if str(device).startswith("cuda") else _rss_mb()
    rate = matmul_peak_gflops(device=device, dtype=torch.bfloat16 if precision == "bf16-mixed" else torch.float32)
    figures = dict.fromkeys(TRAIN_KEYS)
    if train is not None:
        train_s, flops = train
        achieved = flops / 1e9 * batch / train_s
        figures = {"train_step_ms": _round(train_s * 1e3, 1), "train_samples_per_s": _round(batch / train_s, 2),
                   "train_gflop_per_sample": _round(flops / 1e9, 4), "achieved_gflops": _round(achieved, 2),
                   "fraction_of_peak": _round(achieved / rate, 4)}
    return {
        "model": cfg.name, "nodes": nodes, "edges": int(ei.shape[1]), "batch": batch, "history": history,
        "horizon": horizon, "device": str(device), "precision": precision, "compile": compile,
        "checkpoint": bool(getattr(cfg, "checkpoint", False)), "trainable": model.trainable,
        "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters()),
        "train_step_ms": figures["train_step_ms"],
        "train_samples_per_s": figures["train_samples_per_s"],
        "infer_samples_per_s": _round(batch / infer_s, 2),
        "infer_latency_ms_b1": _round(lat * 1e3, 2),
        "peak_memory_mb": round(peak, 1),
        "train_gflop_per_sample": figures["train_gflop_per_sample"],
        "achieved_gflops": figures["achieved_gflops"],
        "peak_gflops": _round(rate, 1),
        "fraction_of_peak": figures["fraction_of_peak"],
    }


def _time_training(model, fwd, amp, b, b1, ei, ew, device: str, steps: int) -> tuple[float, int]:
    """Seconds per training step at batch ``b`` (after one warm-up step) and the FLOPs of one step on
    the one-sample batch ``b1``."""
    from torch.utils.flop_counter import FlopCounterMode

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

    def train_step(b=b):
        with amp:
            d = fwd(b, ei, ew)
        loss, _ = mixture_loss(d, b.y, b.y_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    model.train()
    # FLOPs per sample do not depend on the batch (samples never interact): count them on one
    # sample, which keeps the counter's own bookkeeping small on huge graphs
    with FlopCounterMode(display=False) as fc:
        train_step(b1)
    flops = fc.get_total_flops()
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    gc.collect()
    train_step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        train_step()
    _sync(device)
    return (time.perf_counter() - t) / steps, flops
