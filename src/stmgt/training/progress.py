"""The live status line of a training epoch (:class:`EpochProgress`), drawn on a terminal only::

    stmgt seed 0: epoch 3/50  12/44 batches  loss 0.0784  61 samples/s  0m41s, ~1m50s left

It replaces Lightning's progress bar; the line each epoch ends with is :class:`~stmgt.training.fit.EpochLog`'s.
"""

from __future__ import annotations

import math
import time

from lightning.pytorch.callbacks import Callback

from stmgt.console import StatusLine, duration


def _samples(batch) -> int:
    """Windows in a batch (its targets' first dimension), or 0 where the batch has none to count."""
    y = getattr(batch, "y", None)
    if y is None and isinstance(batch, (list, tuple)) and batch:
        y = batch[0]
    shape = getattr(y, "shape", None)
    return int(shape[0]) if shape else 0


def _total(n) -> int | None:
    """A batch count Lightning reports (an int, inf for an unsized loader, or a list per loader) as an int or None."""
    if isinstance(n, (list, tuple)):
        n = sum(n) if n else None
    if n is None or (isinstance(n, float) and not math.isfinite(n)):
        return None
    return int(n)


class EpochProgress(Callback):
    """Redraws one status line while an epoch trains: batches done of the epoch's, the running mean of
    the training loss, samples per second, the time elapsed and the time left in the epoch; then
    ``validating`` while the validation split is scored.

    The line is drawn when the epoch starts (``starting...``, before the first batch, which may
    build compiled kernels), then after a batch at most every ``interval`` seconds (after every batch
    where batches are slower than that), and erased when the epoch ends. Nothing is written where
    ``stream`` (default stderr) is not a terminal, nor by DDP processes other than rank 0.
    ``clock`` (seconds) is for tests.
    """

    def __init__(self, prefix: str, stream=None, interval: float = 2.0, clock=time.monotonic):
        self.prefix, self.interval, self.clock = prefix, interval, clock
        self.line = StatusLine(stream)
        self._reset()

    def _reset(self) -> None:
        self.done, self.samples, self.loss_sum, self.losses = 0, 0, 0.0, 0
        self.t0 = self.last = self.clock()
        self.val_t0 = None  # when validation started (the training part of the line stops there)
        self.val_done = 0

    def _live(self, trainer) -> bool:
        return self.line.live and trainer.is_global_zero and not trainer.sanity_checking

    def status(self, trainer) -> str:
        """The line as it stands: the training batches so far, and the validation batches once it runs."""
        total = _total(trainer.num_training_batches)
        head = (f"{self.prefix}epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
                f"  {self.done}{'' if total is None else f'/{total}'} batches")
        if not self.done:
            return f"{head}  starting..."
        now = self.clock()
        elapsed = (self.val_t0 if self.val_t0 is not None else now) - self.t0
        parts = [head]
        if self.losses:
            parts.append(f"loss {self.loss_sum / self.losses:.4f}")
        if elapsed > 0 and self.samples:
            rate = self.samples / elapsed
            parts.append(f"{rate:.0f} samples/s" if rate >= 10 else f"{rate:.1f} samples/s")
        left = (f", ~{duration(elapsed / self.done * (total - self.done))} left"
                if total is not None and self.done < total else "")
        parts.append(duration(elapsed) + left)
        if self.val_t0 is not None:
            val = _total(trainer.num_val_batches)
            parts.append(f"validating {self.val_done}{'' if val is None else f'/{val}'} batches"
                         f"  {duration(now - self.val_t0)}")
        return "  ".join(parts)

    def _draw(self, trainer) -> None:
        self.line.show(self.status(trainer))
        self.last = self.clock()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._reset()
        if self._live(trainer):
            self._draw(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._live(trainer):
            return
        self.done += 1
        self.samples += _samples(batch)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            value = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
            if math.isfinite(value):
                self.loss_sum, self.losses = self.loss_sum + value, self.losses + 1
        if self.clock() - self.last >= self.interval:
            self._draw(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.val_done, self.val_t0 = 0, self.clock()
        if self._live(trainer):
            self._draw(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self._live(trainer):
            return
        self.val_done += 1
        if self.clock() - self.last >= self.interval:
            self._draw(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.line.clear()

    def on_train_end(self, trainer, pl_module) -> None:
        self.line.clear()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.line.clear()
