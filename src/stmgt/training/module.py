"""The Lightning module that trains any :class:`~stmgt.models.base.ForecastModel`."""

from __future__ import annotations

import copy
import math
import time

import lightning as L
import torch
from torch import Tensor

from stmgt.config import TrainConfig
from stmgt.data.windows import Batch
from stmgt.distributions.mixture import GaussianMixture
from stmgt.forecaster import Forecaster
from stmgt.models.base import ForecastModel
from stmgt.training.loss import mixture_loss


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite (raised by :meth:`ForecastTask.training_step` before
    the step can spread it into the weights; :func:`~stmgt.training.fit.fit` turns it into a RunError)."""

    def __init__(self, value: float, epoch: int, batch: int):
        super().__init__(f"training loss {value} at epoch {epoch}, batch {batch}")
        self.value, self.epoch, self.batch = value, epoch, batch


class ForecastTask(L.LightningModule):
    """Training, validation and optimisation of the original STMGT design (``docs/design.md``).

    AdamW(lr, weight_decay, betas), CosineAnnealingWarmRestarts(T_0, T_mult, eta_min) stepped
    once per epoch, the mixture loss in scaled units, and validation MAE in data units over
    observed targets (the early-stopping and checkpoint criterion, logged as ``val_mae``) of the
    forecast's median, the point forecast that MAE scores (as in :mod:`stmgt.evaluation.metrics`).

    Args:
        model: the forecaster.
        edge_index: ``[2, E]`` the static graph (a buffer: moved to the device once).
        edge_weight: ``[E]`` its weights or None (default; a buffer too), passed to the model, which
            reads them only with its ``edge_weights`` switch on.
        loc, scale: the target scaler (data = loc + scale * scaled).
        train: :class:`~stmgt.config.TrainConfig`.
    """

    def __init__(self, model: ForecastModel, edge_index: Tensor, loc: float, scale: float, train: TrainConfig,
                 edge_weight: Tensor | None = None):
        super().__init__()
        self.model, self.cfg = model, train
        self.loc, self.scale = float(loc), float(scale)
        self.register_buffer("edge_index", edge_index.long(), persistent=False)
        self.register_buffer("edge_weight", None if edge_weight is None else edge_weight.float(), persistent=False)
        # the weight average of train.ema (validated and checkpointed as "ema.*"; never trained itself)
        self.ema = None if train.ema is None else copy.deepcopy(model).requires_grad_(False)
        self.ema_steps = 0
        self.seconds_before = 0.0  # training seconds of the invocations before this one (from a checkpoint)
        self.started: float | None = None  # perf_counter at this invocation's start (set by fit)

    @property
    def evaluated(self) -> ForecastModel:
        """The weights validation scores and the run keeps: the average with ``train.ema``, else the model."""
        return self.model if self.ema is None else self.ema

    def forward(self, batch: Batch) -> GaussianMixture:
        """The forecast in data units (of :attr:`evaluated`), through the one seam every reader of forecasts uses."""
        return Forecaster(self.evaluated, self.loc, self.scale, self.edge_index, self.edge_weight).forecast(batch)

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is None:
            return
        decay = min(self.cfg.ema, (1 + self.ema_steps) / (10 + self.ema_steps))
        self.ema_steps += 1
        torch._foreach_lerp_(list(self.ema.parameters()), [p.detach() for p in self.model.parameters()], 1 - decay)
        for b, src in zip(self.ema.buffers(), self.model.buffers()):
            b.copy_(src)

    def train_seconds(self) -> float:
        """Training wall-clock so far: the earlier invocations' (from the checkpoint) and this one's."""
        return self.seconds_before + (0.0 if self.started is None else time.perf_counter() - self.started)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ema_steps"] = self.ema_steps
        checkpoint["train_seconds"] = self.train_seconds()  # a resumed run's time adds up

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.ema_steps = int(checkpoint.get("ema_steps", 0))
        self.seconds_before = float(checkpoint.get("train_seconds", 0.0))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        dist = self.model(batch, self.edge_index, self.edge_weight)
        y = batch.y
        if self.cfg.dequantize:  # uniform on [y - w/2, y + w/2): integer counts become a density's support
            y = y + (torch.rand_like(y) - 0.5) * self.cfg.dequantize
        y = (y - self.loc) / self.scale
        loss, parts = mixture_loss(dist, y, batch.y_mask, self.cfg.var_reg, self.cfg.entropy_reg, self.cfg.mae_weight)
        self._check_finite(loss, batch_idx)
        n = batch.y.shape[0]
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("train_nll", parts["nll"], on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def _check_finite(self, loss: Tensor, batch_idx: int) -> None:
        """Raise :class:`NonFiniteLoss` (1-based epoch and batch) when ``loss`` is NaN or inf on any process."""
        bad = not bool(torch.isfinite(loss.detach()))
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:  # every process stops at the same step
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            value = float(loss.detach())  # finite here when another process's loss was not
            raise NonFiniteLoss(value if value != value or abs(value) == float("inf") else float("nan"),
                                self.current_epoch + 1 if trainer is not None else 1, batch_idx + 1)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        dist = self(batch)
        m = batch.y_mask
        count = int(m.sum())
        if count == 0:
            return
        mae = ((dist.icdf(0.5) - batch.y).abs() * m).sum() / count  # the median: MAE's point forecast
        # batch_size=count makes the epoch value the mean over all observed targets
        self.log("val_mae", mae, on_step=False, on_epoch=True, batch_size=count, sync_dist=True, prog_bar=True)

    def configure_optimizers(self):
        c = self.cfg
        opt = torch.optim.AdamW(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay, betas=tuple(c.betas))
        if c.schedule == "one_cycle":
            steps = self._steps_per_epoch()
            sched = torch.optim.lr_scheduler.LambdaLR(opt, one_cycle(c.lr, c.eta_min, round(c.warmup_epochs * steps),
                                                                     (c.cycle_epochs or c.max_epochs) * steps))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=c.t0, T_mult=c.t_mult, eta_min=c.eta_min)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def _steps_per_epoch(self) -> int:
        """Optimizer steps in one training epoch (from the trainer; 1 outside one)."""
        trainer = self._trainer
        if trainer is None:
            return 1
        total = trainer.estimated_stepping_batches  # max_epochs x batches per epoch (limit_train_batches applied)
        return max(1, round(total / max(1, trainer.max_epochs)))


def one_cycle(lr: float, eta_min: float, warmup_steps: int, cycle_steps: int):
    """The ``one_cycle`` schedule as a factor of ``lr`` per step (for ``LambdaLR``): linear from
    ``lr / 25`` to ``lr`` over ``warmup_steps``, a cosine from ``lr`` to ``eta_min`` until ``cycle_steps``,
    then ``eta_min``."""
    floor = eta_min / lr

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 0.04 + 0.96 * step / warmup_steps
        if step >= cycle_steps:
            return floor
        done = (step - warmup_steps) / max(1, cycle_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done))

    return factor
