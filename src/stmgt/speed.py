"""``stmgt speed``: training and inference speed, FLOPs and memory of a model on a scaled city.

The graph is the synthetic city's road graph scaled to ``N`` nodes (about 2.3 directed edges
per node); inputs are random in the model's layout with 3 weather covariates. One training
step is AdamW with the mixture loss and gradient clipping, as in training.

Figures reported:

* ``params``; ``train_samples_per_s`` and ``infer_samples_per_s`` at batch ``B``;
  ``infer_latency_ms_b1`` (one sample);
* ``peak_memory_mb``: the process's peak resident memory (CPU) or the peak allocated GPU memory;
* ``train_gflop_per_sample`` from ``torch.utils.flop_counter`` and ``achieved_gflops``
  (that times the training samples per second);
* ``peak_gflops``: a large matrix multiply's measured rate in the run's precision (float32, or
  bfloat16 under ``bf16-mixed``) on the same threads, and ``fraction_of_peak`` = achieved / peak.
"""

from __future__ import annotations

import gc
import resource
import time

import torch

from stmgt.config import ModelConfig, model_config
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


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(model_name: str = "stmgt", nodes: int = 62, batch: int = 32, history: int = 12, horizon: int = 12,
          device: str = "cpu", steps: int = 5, precision: str = "32", compile: bool = False,
          cfg: ModelConfig | None = None, checkpoint: bool = False, keep_memory: bool = True) -> dict:
    """Measure one model configuration; returns the figures listed in the module docstring.
    ``keep_memory`` keeps freed memory for reuse as training does (:mod:`stmgt.runtime`)."""
    from stmgt.data.synthetic import synthetic_graph

    if keep_memory:
        keep_freed_memory()

    torch.manual_seed(0)
    memory = {"checkpoint": True, "checkpoint_chunk": 1} if checkpoint else {}  # (an STMGT setting)
    cfg = cfg or model_config(model_name, **memory)
    info = DataInfo(num_nodes=nodes, weather_dim=3, history=history, horizon=horizon)
    model = build_model(cfg, info).to(device)
    graph = synthetic_graph(nodes, seed=0)
    ei = torch.from_numpy(graph.edge_index).to(device)
    ew = torch.from_numpy(graph.edge_weight).to(device)  # read only by models with edge_weights on
    b = make_batch(B=batch, T=history, H=horizon, N=nodes).to(device)
    b1 = make_batch(B=1, T=history, H=horizon, N=nodes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    fwd = torch.compile(model) if compile else model
    amp = (torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)
           if precision == "bf16-mixed" else torch.autocast("cpu", enabled=False))

    def train_step(b=b):
        with amp:
            d = fwd(b, ei, ew)
        loss, _ = mixture_loss(d, b.y, b.y_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    model.train()
    from torch.utils.flop_counter import FlopCounterMode

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
    train_s = (time.perf_counter() - t) / steps
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
    achieved = flops / 1e9 * batch / train_s
    return {
        "model": cfg.name, "nodes": nodes, "edges": int(ei.shape[1]), "batch": batch, "history": history,
        "horizon": horizon, "device": str(device), "precision": precision, "compile": compile,
        "checkpoint": cfg.checkpoint,
        "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters()),
        "train_step_ms": round(train_s * 1e3, 1),
        "train_samples_per_s": round(batch / train_s, 2),
        "infer_samples_per_s": round(batch / infer_s, 2),
        "infer_latency_ms_b1": round(lat * 1e3, 2),
        "peak_memory_mb": round(peak, 1),
        "train_gflop_per_sample": round(flops / 1e9, 4),
        "achieved_gflops": round(achieved, 2),
        "peak_gflops": round(rate, 1),
        "fraction_of_peak": round(achieved / rate, 4),
    }
