"""Generic layers: nothing here knows about STMGT, traffic or a model's configuration.

A layer belongs here when another spatio-temporal model could use it as it is: graph attention
(:mod:`.gat`), the Mamba layer (:mod:`.mamba`) and its selective scans (:mod:`.selective_scan`),
positional encoding, dropout, and the Gaussian-mixture output head that every probabilistic model
of the package ends in. Parts that only make sense inside STMGT or STMamba (their branches,
blocks, decoder) live in :mod:`stmgt.nn.blocks`. One layer a module; the names below are imported
on first use.
"""

from __future__ import annotations

from stmgt._lazy import lazy_exports

_EXPORTS = {
    "GraphAttention": "stmgt.nn.layers.gat",
    "Mamba": "stmgt.nn.layers.mamba",
    "MambaState": "stmgt.nn.layers.mamba",
    "PositionalEncoding": "stmgt.nn.layers.positional_encoding",
    "FastDropout": "stmgt.nn.layers.dropout",
    "GaussianMixtureHead": "stmgt.nn.layers.mixture_head",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
