"""Training: the loss, the Lightning task and :func:`fit`.

``fit`` and ``ForecastTask`` are imported on first use, so that importing the loss alone does not
import Lightning.
"""

from __future__ import annotations

import sys
import types

from stmgt._lazy import lazy_exports
from stmgt.training.loss import mixture_loss

__all__ = ["fit", "ForecastTask", "mixture_loss"]

__getattr__, __dir__ = lazy_exports(__name__, {"fit": "stmgt.training.fit", "ForecastTask": "stmgt.training.module"},
                                    globals())


class _Package(types.ModuleType):
    """Keeps ``stmgt.training.fit`` the function once the submodule of the same name is imported.

    The import system binds a freshly imported submodule as an attribute of its package, which
    would make ``from stmgt.training import fit`` return the module ``stmgt.training.fit``.
    """

    def __setattr__(self, name, value):
        if name == "fit" and isinstance(value, types.ModuleType):
            value = getattr(value, "fit", value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
