"""Validated configuration (pydantic): data, model and training sections.

A YAML file holds any subset of the sections; unknown keys and bad values are refused with a
one-line :class:`~stmgt.errors.ConfigError` naming the key. Defaults are the original STMGT
design's (see ``docs/design.md``): hidden 96, 3 blocks, 4 heads, K=5, dropout 0.2, DropEdge 0.05,
AdamW 1e-3 / 1e-4, batch 32, cosine warm restarts T_0=10 T_mult=2, clipping 1.0, 100 epochs,
patience 10.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

from stmgt.errors import ConfigError, plain
from stmgt.registry import DEFAULT_MODEL, MODELS, config_class, model_names


class _Section(BaseModel):
    # no inf/NaN in any number (lr: .inf trained an all-NaN model and exited 0)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False,
                              use_attribute_docstrings=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v, info):
        """YAML's ``true`` is not a number (``batch_size: true`` silently became 1, ``betas: [0.9, true]`` 1.0);
        an empty section (``data:`` with nothing under it) is that section's defaults."""
        field = cls.model_fields[info.field_name]
        if v is None and isinstance(field.annotation, type) and issubclass(field.annotation, _Section):
            return {}
        ann = str(field.annotation)
        if ("int" in ann or "float" in ann) and "bool" not in ann:
            if isinstance(v, bool):
                raise ValueError("expected a number, got a boolean")
            if isinstance(v, (list, tuple)) and any(isinstance(x, bool) for x in v):
                raise ValueError("expected numbers, got a boolean")
        return v


class SyntheticConfig(_Section):
    """The embedded synthetic city (``source: synthetic``)."""

    nodes: int = Field(62, ge=2, le=100_000)
    days: float = Field(28, gt=0)
    interval_minutes: int = Field(5, ge=1, le=1440)
    seed: int = 0


class DataConfig(_Section):
    source: str = "synthetic"
    """``synthetic`` or a path to a dataset folder/file (see ``stmgt.data.loaders``)."""
    format: str | None = None
    history: int = Field(12, ge=1)
    horizon: int = Field(12, ge=1)
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    synthetic: SyntheticConfig = SyntheticConfig()
    options: dict[str, str | int | float | bool | None] = {}
    """Options of the dataset's loader, e.g. ``{interval: 5min, dayfirst: true}`` for your own city; checked
    against the options of the loader the data needs when it is loaded (``stmgt data check --help``)."""

    @field_validator("split")
    @classmethod
    def _split(cls, v):
        if any(x < 0 for x in v) or abs(sum(v) - 1) > 1e-6 or v[0] <= 0:
            raise ValueError(f"split must be three non-negative fractions summing to 1, got {list(v)}")
        return v


class ModelConfig(_Section):
    """The ``model`` section: ``name`` picks a model of :mod:`stmgt.registry`, and the other keys are
    that model's own settings, a subclass of this class kept beside the model (``STMGTConfig`` in
    ``stmgt/models/stmgt.py``, ...). A setting of another model is refused with a one-line error naming
    the models it belongs to. ``stmgt models NAME`` lists a model's settings with their defaults."""

    name: str = DEFAULT_MODEL
    """The model (``stmgt models`` lists them)."""
    min_std: float = Field(0.01, gt=0)
    """Floor on every forecast standard deviation (scaled units)."""


class NeuralModelConfig(ModelConfig):
    """Settings every trained network with the Gaussian-mixture head shares."""

    hidden: int = Field(96, ge=4)
    """Feature size ``D`` (for the baselines: features per horizon step given to the head)."""
    mixtures: int = Field(5, ge=1)
    """Gaussian-mixture components ``K`` of the head."""
    dropout: float = Field(0.2, ge=0, lt=1)
    """Dropout probability."""
    max_std: float | None = Field(10.0, gt=0)
    """Upper bound on each component's std (scaled units; None: unbounded). The variance regulariser
    pushes every log std up, and a component whose weight has gone to ~0 gets no pull back from the
    NLL, so without a bound its std grows without limit (seen: 5e5 km/h at weight 2e-4)."""


class TrainConfig(_Section):
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    max_epochs: int = Field(100, ge=1)
    patience: int = Field(10, ge=1)
    grad_clip: float = Field(1.0, gt=0)
    schedule: Literal["warm_restarts", "one_cycle"] = "warm_restarts"
    """Learning-rate schedule. ``warm_restarts`` (the design's): cosine annealing with warm restarts
    (``t0``, ``t_mult``, ``eta_min``), stepped per epoch. ``one_cycle``: a linear warm-up over
    ``warmup_epochs`` to ``lr``, then one cosine decay to ``eta_min`` at the end of ``cycle_epochs``
    (default ``max_epochs``), stepped per batch: no restart throws away a converging model, so it
    needs fewer epochs (Loshchilov and Hutter, ICLR 2017; Smith and Topin, 2019)."""
    t0: int = Field(10, ge=1)
    t_mult: int = Field(2, ge=1)
    eta_min: float = Field(1e-6, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    """With ``schedule: one_cycle``: epochs of linear warm-up from ``lr / 25``."""
    cycle_epochs: int | None = Field(None, ge=1)
    """With ``schedule: one_cycle``: epochs of the one cycle (None: ``max_epochs``); then ``eta_min``."""
    ema: float | None = Field(None, gt=0, lt=1)
    """Validate, checkpoint and keep an exponential moving average of the weights with this decay per
    optimizer step (e.g. 0.995; warmed up as ``min(ema, (1 + step) / (10 + step))``); None (default): the
    weights as trained. Averaging removes the step-to-step noise of the last epochs, so a short
    schedule reaches the accuracy of a long one sooner (Polyak and Juditsky, 1992)."""
    var_reg: float = Field(0.01, ge=0)
    entropy_reg: float = Field(0.001, ge=0)
    mae_weight: float = Field(0.0, ge=0)
    """Add this times the masked MAE of the mixture mean (scaled units) to the loss (0: the design's loss)."""
    dequantize: float = Field(0.0, ge=0)
    """Add uniform noise of this width (data units) to the training targets (0: none). For integer counts,
    width 1 is the dequantisation of a density model (Theis et al., "A note on the evaluation of generative
    models", ICLR 2016): without it a mixture can drive its NLL down without bound by narrowing onto exact
    integers (the zeros of sparse counts), which says nothing about forecasting them."""
    seed: int = 0
    devices: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    """Multi-process strategy; ``auto`` is DDP (one process per device) when ``devices > 1``."""
    num_nodes: int = Field(1, ge=1)
    """Machines for multi-node DDP (with ``torchrun`` or a cluster launcher)."""
    accelerator: Literal["cpu", "gpu", "cuda", "auto"] = "cpu"
    precision: Literal["32", "bf16-mixed", "16-mixed", "auto"] = "32"
    """Arithmetic precision: ``"auto"`` is bf16 autocast where the CPU has AVX512-BF16 or AMX (or the
    GPU supports bf16) and float32 elsewhere."""
    max_minutes: float | None = Field(None, gt=0)
    """Stop training after this many minutes (the run's ``training.json`` then says ``budget``)."""
    limit_train_batches: float | int | None = None
    """Use only this many (int) or this fraction (float) of training batches per epoch."""
    num_threads: int | None = Field(None, ge=1)
    progress: bool = True
    """On a terminal, redraw a status line while each epoch trains (batches, loss, samples/s, time left);
    the one line per epoch on stderr is printed either way (``--quiet`` turns both off)."""
    keep_freed_memory: bool | None = None
    """Keep freed memory in the process for reuse instead of unmapping it (glibc only; see
    :mod:`stmgt.runtime`): 2.5x faster CPU steps on Los-loop for ~20% more resident memory.
    None (default): on, unless a memory-saving model option is set (``checkpoint``, ``node_chunk``,
    ``graph_chunk``), where the kept, fragmented heap can double the peak (STMamba, 207 roads,
    history 288, batch 8, both chunks: 12.0 GiB kept vs 6.1 GiB returned, 100 s vs 140 s a step)."""


class _ModelName(_Section):
    name: Literal[tuple(MODELS)] = DEFAULT_MODEL  # type: ignore[valid-type]


def model_config(name: str = DEFAULT_MODEL, **settings) -> ModelConfig:
    """The validated settings of the model ``name`` (its defaults, updated with ``settings``):
    ``model_config("gwnet", dropout=0.3)``. Imports the model's module."""
    return make_config({"model": {"name": name, **settings}}, where="model_config()").model


class Config(_Section):
    data: DataConfig = DataConfig()
    model: SerializeAsAny[ModelConfig] = Field(default_factory=model_config)
    train: TrainConfig = TrainConfig()

    @field_validator("model", mode="wrap")
    @classmethod
    def _model(cls, v, handler):
        """A mapping is validated as the settings of the model it names (``stmgt`` when it names none)."""
        if v is None:
            v = {}
        if isinstance(v, dict):
            name = _ModelName.model_validate({"name": v.get("name", DEFAULT_MODEL)}).name
            return config_class(name).model_validate({**v, "name": name})
        return handler(v)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _kind(v) -> str:
    for t, name in ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"),
                    (list, "a list"), (tuple, "a list"), (dict, "a mapping")):
        if isinstance(v, t):
            return name
    return "empty" if v is None else type(v).__name__


def _chosen_model(raw) -> str | None:
    """The model a raw config names (``stmgt`` when it names none; None when the name is unknown)."""
    section = raw.get("model") if isinstance(raw, dict) else None
    name = section.get("name", DEFAULT_MODEL) if isinstance(section, dict) else DEFAULT_MODEL
    return name if isinstance(name, str) and name in MODELS else None


def _section_at(loc: tuple, raw=None) -> type[BaseModel] | None:
    """The section class at ``loc`` (``()`` is the top level, ``("data", "synthetic")`` SyntheticConfig,
    ``("model",)`` the settings class of the model ``raw`` names)."""
    cls: type[BaseModel] = Config
    for i, part in enumerate(loc):
        if i == 0 and part == "model":
            name = _chosen_model(raw)
            cls = config_class(name) if name else ModelConfig
            continue
        field = cls.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        cls = ann
    return cls


def settings_of(key: str) -> list[str]:
    """The models that have the setting ``key`` (imports every model's module)."""
    return [name for name in model_names() if key in config_class(name).model_fields]


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def _message(e: dict, raw=None) -> str:
    """One pydantic error as ``must be >= 1 (got 0)``, ``unknown key (did you mean hidden?)``, ..."""
    loc, got, kind = e["loc"], e.get("input"), e["type"]
    if kind == "extra_forbidden":
        section = _section_at(loc[:-1], raw)
        known = list(section.model_fields) if section else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if not loc[:-1]:
            return f"unknown section (the sections are {', '.join(known)})"
        if loc[:-1] == ("model",) and (owners := settings_of(str(loc[-1]))):
            return (f"not a setting of {_chosen_model(raw)} (it is a setting of {', '.join(owners)};"
                    f" `stmgt models {_chosen_model(raw)}` lists {_chosen_model(raw)}'s)")
        return "unknown key" + (f" (did you mean {close[0]}?)" if close else "")
    if kind == "model_type":
        return f"must be a section of `key: value` lines, not {_kind(got)}" + (
            f" ({plain(got)})" if isinstance(got, (list, tuple, int, float, str)) else "")
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        bound = e.get("ctx", {}).get(key)
        msg = f"must be {op} {int(bound) if isinstance(bound, float) and bound.is_integer() else bound}"
    else:
        msg = e["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    return msg + ("" if isinstance(got, dict) or "got " in msg else f" (got {plain(got)})")


def _one_line(err: ValidationError, where: str, options: dict[str, str] | None = None, raw=None) -> str:
    """``where: data.horizon: must be >= 1 (got 0)``, or ``--horizon: must be >= 1 (got 0)`` when the value
    came from the command-line option that ``options`` maps ``data.horizon`` to."""
    in_file, from_cli = [], []
    errors = err.errors()
    for e in errors[:3]:
        loc = ".".join(str(x) for x in e["loc"])
        if options and loc in options:
            from_cli.append(f"{options[loc]}: {_message(e, raw)}")
        else:
            in_file.append(f"{loc or '(top level)'}: {_message(e, raw)}")
    parts = from_cli + ([f"{where}: " + "; ".join(in_file)] if in_file else [])
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _from_flat_model_section(data: dict) -> dict:
    """A config whose ``model`` section was written when every model shared one flat section of settings
    (run folders saved before per-model settings: they hold every model's keys), reduced to the keys its
    model read then: all of its own for STMGT and STMamba, the shared ones for the others (whose own
    settings did not exist; Graph WaveNet's ``blocks`` then was STMGT's, unread)."""
    section = data.get("model") if isinstance(data, dict) else None
    name = _chosen_model(data)
    if not isinstance(section, dict) or name is None:
        return data
    own = config_class(name).model_fields
    if all(k in own for k in section):
        return data  # written with per-model settings
    read = own if name in ("stmgt", "stmamba") else NeuralModelConfig.model_fields
    return {**data, "model": {k: v for k, v in section.items() if k in own and k in read}}


def make_config(data: dict | None = None, where: str = "config", options: dict[str, str] | None = None,
                *, saved_run: bool = False) -> Config:
    """Validate a nested dict into a :class:`Config` (one-line :class:`ConfigError` on failure).

    ``options`` maps dotted keys to the command-line options that set them (``{"data.horizon": "--horizon"}``):
    a bad value there is blamed on the option, any other on ``where`` (the file). ``saved_run``: ``data`` is a
    run folder's ``config.yaml``, which may come from a version with one flat model section for every model.
    """
    if saved_run:
        data = _from_flat_model_section(data)
    try:
        return Config.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(_one_line(e, where, options, data)) from None


def read_yaml(path: str | Path, what: str = "config file") -> object:
    """The YAML document in ``path``, or a one-line :class:`ConfigError` (missing, a folder, unreadable,
    not UTF-8, or not YAML, with the line)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; give the {what} (a .yaml file)")
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the {what}: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        byte = f"0x{data[e.start]:02x}"
        raise ConfigError(f"{p}: not UTF-8 text (byte {byte} at line {line}); save it as UTF-8") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        end = mark is not None and mark.index >= len(text.rstrip())
        where = ("" if not mark else f" at line {mark.line + 1} (the end of the file)" if end
                 else f" at line {mark.line + 1}, column {mark.column + 1}")
        problem = getattr(e, "problem", None)
        ctx, ctx_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
        opened = f" ({ctx} from line {ctx_mark.line + 1})" if ctx and ctx_mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}" + (f": {problem}{opened}" if problem else "")) from None


def read_config_file(path: str | Path) -> dict:
    """The config file at ``path`` as a mapping (an empty file: ``{}``), or a one-line :class:`ConfigError`."""
    raw = read_yaml(path)
    if raw is None:
        return {}  # an empty file: the defaults
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with data, model and train sections,"
                          f" not {_kind(raw)}")
    return raw


def load_config(path: str | Path | None = None, overrides: dict | None = None,
                options: dict[str, str] | None = None, *, saved_run: bool = False, raw: dict | None = None) -> Config:
    """Read a YAML config (or the defaults) and apply ``overrides`` given as ``{"train.seed": 1}``.

    ``options`` maps override keys to the command-line options they came from (``{"train.seed": "--seed"}``),
    so that a bad value is blamed on the option rather than on the file; ``saved_run``: ``path`` is a run
    folder's ``config.yaml`` (see :func:`make_config`); ``raw``: the file's content, already read (``path``
    then only names it).
    """
    where = str(path) if path is not None else "config"
    if raw is not None:
        raw = copy.deepcopy(raw)
    else:
        raw = read_config_file(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        d = raw
        *parents, last = key.split(".")
        for i, k in enumerate(parents):
            if d.get(k) is None:
                d[k] = {}
            elif not isinstance(d[k], dict):
                raise ConfigError(f"{where}: {'.'.join(parents[:i + 1])}: must be a section of `key: value` lines,"
                                  f" not {_kind(d[k])} ({plain(d[k])})")
            d = d[k]
        d[last] = value
    return make_config(raw, where, {k: v for k, v in (options or {}).items() if (overrides or {}).get(k) is not None},
                       saved_run=saved_run)
