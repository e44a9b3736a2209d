"""Training: the loss, the Lightning task and :func:`fit`."""

from stmgt.training.loss import mixture_loss

__all__ = ["mixture_loss"]
