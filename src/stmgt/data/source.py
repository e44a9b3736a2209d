"""Resolve a :class:`~stmgt.config.DataConfig` to a panel: the synthetic city or a dataset path."""

from __future__ import annotations

import hashlib

from stmgt.config import DataConfig
from stmgt.data.panel import Panel
from stmgt.errors import ConfigError


def load_source(cfg: DataConfig) -> Panel:
    """The panel named by ``cfg.source``: ``"synthetic"`` or a folder/file any loader reads."""
    if cfg.source == "synthetic":
        from stmgt.data.synthetic import synthetic_city

        if cfg.options:
            raise ConfigError(f"data.options: the synthetic city takes no loader options (got"
                              f" {', '.join(cfg.options)}); its settings are under data.synthetic")
        s = cfg.synthetic
        return synthetic_city(num_nodes=s.nodes, days=s.days, interval_minutes=s.interval_minutes, seed=s.seed)
    from stmgt.data.loaders import LOADERS, check_options, detect_format, load

    fmt = cfg.format or detect_format(cfg.source)
    if fmt in LOADERS:  # an option the loader lacks is blamed on data.options (an unknown format: load's error)
        check_options(fmt, cfg.options, where="data.options: ")
    return load(cfg.source, format=fmt, **cfg.options)


def fingerprint(panel: Panel) -> str:
    """A short hash of the panel's values, mask, timestamps and graph (detects changed data)."""
    h = hashlib.sha256()
    for a in (panel.values, panel.mask, panel.timestamps.astype("int64"), panel.edge_index):
        h.update(a.tobytes())
    return h.hexdigest()[:16]
