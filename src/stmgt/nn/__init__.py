"""Neural-network parts, by role (as torch-spatiotemporal's ``tsl.nn.layers`` / ``tsl.nn.blocks``).

* :mod:`stmgt.nn.layers`: generic layers (graph attention, Mamba and its selective scans,
  positional encoding, dropout, the Gaussian-mixture head);
* :mod:`stmgt.nn.blocks`: the parts of STMGT and STMamba built from them (embedding, branches,
  fusion, the two models' blocks, weather attention, horizon projections and calendar, the shared
  forecast decoder).

Details on request: a layer or block returns its attention (or gate) weights only when called
with ``return_attention=True``, as a tuple after its output; a model keeps them in
``model.details`` after a forward with ``model.keep_details = True``.

Every public name of both packages is also exported here, imported on first use.
"""

from __future__ import annotations

from stmgt._lazy import lazy_exports
from stmgt.nn.blocks import _EXPORTS as _BLOCKS
from stmgt.nn.layers import _EXPORTS as _LAYERS

_EXPORTS = {**_LAYERS, **_BLOCKS}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
