"""stmgt: probabilistic spatio-temporal traffic forecasting on road networks.

The public API::

    from stmgt.data import Panel, load, synthetic_city
    from stmgt.distributions import GaussianMixture
    from stmgt.models import STMGT, build_model, model_config
    from stmgt.training import fit

The same names (and :func:`~stmgt.config.load_config`, :func:`~stmgt.evaluation.evaluate_run`)
are attributes of this package, imported on first use so that ``import stmgt`` stays cheap:
``stmgt.fit(stmgt.load_config(), "runs/mine")``.
"""

from __future__ import annotations

from stmgt._lazy import lazy_exports
from stmgt.runtime import passive_wait_policy

passive_wait_policy()  # before torch loads OpenMP: idle workers sleep instead of spinning (stmgt.runtime)

__version__ = "0.1.0"

_EXPORTS = {
    "Panel": "stmgt.data",
    "synthetic_city": "stmgt.data",
    "load": "stmgt.data",
    "GaussianMixture": "stmgt.distributions",
    "STMGT": "stmgt.models",
    "STMamba": "stmgt.models",
    "build_model": "stmgt.models",
    "model_config": "stmgt.models",
    "load_config": "stmgt.config",
    "fit": "stmgt.training",
    "evaluate_run": "stmgt.evaluation",
}

__all__ = ["__version__", *_EXPORTS]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
