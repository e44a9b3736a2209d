"""``stmgt benchmark``: every model x every seed under one protocol, one table.

Each (model, seed) is trained into ``OUT/runs/<model>/seed<k>`` with the checkpoint chosen on
validation MAE, then evaluated once on the test split. Results are written as
``OUT/<name>.json`` (every run's metrics) and ``OUT/<name>.md`` (mean +/- sample std over seeds
at horizons 3, 6, 12 and the average, plus the probabilistic scores), with the protocol stated
in the table's header. Runs accumulate: results already in the JSON are kept; a run its time budget
stopped is resumed from its checkpoint, and so is a training a signal stopped (``RUN_DIR.interrupted``) or
that was killed outright (the last finished epoch in ``RUN_DIR.partial-<pid>``); a finished run folder
trained with exactly the requested settings (a seed whose result was lost, or an ablation's run copied in)
is scored without training again;
``--split val`` scores ablations on the validation split.

Protocols:

* ``standard``: chronological 70/10/20, windows inside each split, history 12 -> horizon 12;
* ``tgcn``: the T-GCN paper's 80/20 split with the last 10% of the training part held out for
  validation (72/8/20), history 12 -> horizon 3, metrics pooled over the 3 steps.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from stmgt.config import load_config, read_config_file, settings_of
from stmgt.console import duration, notice
from stmgt.data.source import load_source
from stmgt.errors import ConfigError, StmgtError
from stmgt.evaluation.forecast import forecast_split
from stmgt.evaluation.horizons import reported_horizons
from stmgt.evaluation.report import metrics_table_markdown, probabilistic_table_markdown
from stmgt.forecaster import TrainedRun
from stmgt.registry import MODELS, config_class
from stmgt.run_folder import Run
from stmgt.training.fit import INTERRUPTED, PARTIAL, fit, interrupted_target

PROTOCOLS = {
    "standard": {"data.split": [0.7, 0.1, 0.2], "data.history": 12, "data.horizon": 12},
    "tgcn": {"data.split": [0.72, 0.08, 0.2], "data.history": 12, "data.horizon": 3},
}


def protocol_text(protocol: str, panel_name: str, cfg, split: str = "test") -> str:
    d = cfg.data
    f = "/".join(f"{x * 100:g}" for x in d.split)
    pooled = " Metrics pooled over the 3 steps (the T-GCN paper's RMSE)." if protocol == "tgcn" else ""
    return (f"Dataset {panel_name}; chronological {f} train/validation/test split of the series with windows made "
            f"inside each split; history {d.history} -> horizon {d.horizon}; scaler fitted on the training split; "
            "masked metrics on de-normalised values (MAE and MAPE score each forecast's median, RMSE its mean); "
            "horizon columns are single steps, 'avg' is the mean over all "
            "forecast steps; checkpoint chosen on validation MAE and "
            + ("the test split evaluated once" if split == "test" else
               "**every figure from the validation split** (an ablation: the test split is not read)")
            + f"; mean +/- sample std over seeds.{pooled}")


def _flock(path: Path, wait: bool):
    """``path`` opened and exclusively ``flock``-ed; None when ``wait`` is False and another process
    holds it. The lock goes with the process, so a crashed holder never blocks anyone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def _locked(path: Path):
    """Lock on ``path.lock`` (a context manager) so that parallel ``stmgt benchmark`` processes
    (e.g. one per model) can share one results file without losing each other's runs."""
    return _flock(path.with_suffix(".lock"), wait=True)


def _claim(run_dir: Path):
    """``<run_dir>.running`` (beside the folder, which training replaces as a unit) locked for this
    process, or None when another process is training that run."""
    return _flock(run_dir.with_name(run_dir.name + ".running"), wait=False)


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}}


def curve(run) -> dict:
    """``{"val_mae_by_epoch": [...], "lr_by_epoch": [...]}`` from a trained run's ``history.csv`` (kept in the
    results JSON, so the learning curve outlives the run folder); {} for statistical models."""
    hist = run.history()
    if not hist:
        return {}
    def num(v: float, digits: int = 12):  # JSON has no NaN: an epoch that logged no value is null
        return None if v != v else round(v, digits)

    return {"val_mae_by_epoch": [num(r["val_mae"], 4) for r in hist], "lr_by_epoch": [num(r["lr"]) for r in hist]}


def result_name(data: str, protocol: str = "standard", name: str | None = None) -> str:
    """Stem of the result files: ``name``, else the dataset folder's name (plus ``_<protocol>``)."""
    stem = Path(data).name if data != "synthetic" else "synthetic"
    return name or (stem if protocol == "standard" else f"{stem}_{protocol}")


def per_model_overrides(config: str | None) -> tuple[dict, dict[str, dict]]:
    """Split a benchmark config into the shared part and its ``models:`` section.

    A benchmark config is a normal config plus an optional ``models:`` mapping of model name ->
    settings that only that model gets (each baseline trained with its paper's settings). A name
    that is not a model is a *variant* (an ablation row) and says which model it is::

        train: {max_epochs: 100, patience: 10}
        model: {hidden: 64}            # each benchmarked model that has a setting takes it
        models:
          stid: {train: {lr: 0.002}, model: {dropout: 0.15}}
          stmgt_flat: {model: {name: stmgt, decoder: flat}}

    Returns the config without ``models:`` (a dict; empty for no config) and
    ``{model: {"train.lr": 0.002, ...}}``.
    """
    if config is None:
        return {}, {}
    p = Path(config)
    raw = read_config_file(p)  # one-line errors for a missing, non-UTF-8, invalid or non-mapping file
    models = raw.pop("models", None) or {}
    if not isinstance(models, dict):
        raise ConfigError(f"{p}: models: must map model names to settings")
    flat: dict[str, dict] = {}
    for name, sections in models.items():
        if not isinstance(sections, dict):
            raise ConfigError(f"{p}: models.{name}: must map sections (data/model/train) to settings")
        flat[name] = {}
        for section, values in sections.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{p}: models.{name}.{section}: must be a mapping")
            flat[name].update({f"{section}.{k}": v for k, v in values.items()})
    return raw, flat


def model_of(entry: str, overrides: dict[str, dict], config: str | None) -> str:
    """The registered model a ``--models`` entry trains: itself, or the ``model.name`` of its variant."""
    name = overrides.get(entry, {}).get("model.name", entry)
    if name not in MODELS:
        raise ConfigError(f"{entry!r} is neither a model ({', '.join(MODELS)}) nor a variant with a"
                          f" model.name under models: in {config or 'the config'}")
    return name


def shared_for(base: dict, model: str) -> dict:
    """The benchmark config for one model: the shared ``model`` section reduced to that model's settings."""
    shared = base.get("model")
    if not isinstance(shared, dict):
        return base
    own = config_class(model).model_fields
    return {**base, "model": {k: v for k, v in shared.items() if k in own and k != "name"}}


def training_table_markdown(runs: dict) -> str:
    """How each run was trained: epochs, best epoch, why it stopped, wall-clock, precision, threads."""
    md = ["| run | epochs | best epoch | best val MAE | stopped by | train minutes | precision | threads |",
          "|---|---|---|---|---|---|---|---|"]
    for key, m in sorted(runs.items()):
        if "epochs" not in m:  # statistical models, or runs recorded before training.json existed
            md.append(f"| {key} | — | — | — | fitted, not trained | {m.get('train_seconds', 0) / 60:.1f} | — | — |")
            continue
        md.append(f"| {key} | {m['epochs']} | {m['best_epoch']} | {m['best_val_mae']:.3f} | {m['stop_reason']} |"
                  f" {m['train_seconds'] / 60:.1f} | {m['precision']} | {m['threads']} |")
    return "\n".join(md)


def _same_settings(folder: Path, cfg, ignore: tuple[str, ...] = ()) -> bool:
    """Whether the run folder ``folder`` (finished or not) was set up with exactly ``cfg``: every setting but
    the ``train`` keys in ``ignore``, the data source compared as a resolved path."""
    try:
        have = Run(folder).config().to_dict()
    except StmgtError:
        return False
    want = cfg.to_dict()
    for c in (have, want):
        src = c["data"]["source"]
        c["data"]["source"] = src if src == "synthetic" else str(Path(src).resolve())
        for key in ignore:
            c["train"].pop(key, None)
    return have == want


def trained_with(run_dir: Path, cfg) -> bool:
    """Whether ``run_dir`` is a finished run (a folder of that name is always whole: training renames it into
    place) trained with exactly ``cfg`` (every setting; the data source compared as a resolved path) and not
    stopped by its time budget. A statistical model's folder is never adopted: it is refitted (seconds), so a
    table never keeps statistics an earlier version of the code computed."""
    if not (run_dir / "manifest.json").is_file() or not (run_dir / "training.json").is_file():
        return False
    return _same_settings(run_dir, cfg) and TrainedRun(run_dir).training().get("stop_reason") != "budget"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _leftovers(run_dir: Path):
    """The folders unfinished trainings of ``run_dir`` left beside it: ``RUN_DIR.interrupted`` and the
    ``RUN_DIR.partial-<pid>`` of processes that are gone."""
    for folder in run_dir.parent.glob(run_dir.name + ".*"):
        if folder == interrupted_target(folder) or interrupted_target(folder).name != run_dir.name:
            continue  # not a leftover of this run (a lock file, or another run's folder)
        if folder.name.endswith(INTERRUPTED) or not _alive(int(folder.name.rpartition(PARTIAL)[2])):
            yield folder


def unfinished_runs(runs_dir: Path) -> list[str]:
    """``model/seedK`` of every run under ``runs_dir`` (``OUT/runs/<name>``) an unfinished training left a
    folder for (see :func:`leftover_checkpoint`)."""
    runs = {interrupted_target(p) for p in runs_dir.glob("*/seed*.*")}  # the run folders leftovers were training
    return sorted(f"{r.parent.name}/{r.name}" for r in runs if any(_leftovers(r)))


def leftover_checkpoint(run_dir: Path, cfg) -> tuple[Path, int] | None:
    """``(last.ckpt, its epoch, 1-based)`` of the unfinished training of ``cfg`` furthest on that ``run_dir``'s
    trainings left beside it: ``RUN_DIR.interrupted`` (stopped by SIGTERM or Ctrl-C, which save a checkpoint)
    or ``RUN_DIR.partial-<pid>`` of a process that is gone (killed outright, or ended with its session: its
    ``last.ckpt`` is the last finished epoch). Only a training of the same settings counts, ``train.max_epochs``
    and ``train.max_minutes`` aside (how long to go on, as when a budget-stopped run is resumed); None when
    there is none."""
    import torch

    found = []
    for folder in _leftovers(run_dir):
        ckpt = folder / "checkpoints" / "last.ckpt"
        if not ckpt.is_file() or not _same_settings(folder, cfg, ignore=("max_epochs", "max_minutes")):
            continue
        try:  # a checkpoint cut short by the kill is skipped
            epochs = int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["epoch"])
        except Exception:  # noqa: BLE001 - any unreadable checkpoint is simply not resumed
            continue
        found.append((epochs + 1, str(ckpt)))
    if not found:
        return None
    epochs, ckpt = max(found)
    return Path(ckpt), epochs


def run_benchmark(data: str, models: list[str], seeds: int = 3, out: str | Path = "benchmarks/results",
                  name: str | None = None, protocol: str = "standard", config: str | None = None,
                  max_epochs: int | None = None, data_format: str | None = None,
                  options: dict[str, str] | None = None, quiet: bool = False, split: str = "test") -> dict:
    """``options``: the command-line option of each setting (``{"train.max_epochs": "--max-epochs"}``), named in
    the message for a bad value (:func:`~stmgt.config.load_config`).

    Each training's epoch lines and terminal status line start with ``[k/n] <model> seed <s>``
    (the k-th of the n runs) and each finished run prints its test MAE; ``quiet`` prints neither.
    ``split="val"`` scores every run on the validation split instead (ablations chosen on validation, the
    test split untouched); one results file holds one split (a mismatch is refused)."""
    out = Path(out)
    base_raw, overrides = per_model_overrides(config)
    trains = {entry: model_of(entry, overrides, config) for entry in models}  # every entry checked first
    shared = base_raw.get("model") if isinstance(base_raw.get("model"), dict) else {}
    for key in shared:  # each model takes the shared settings it has; a key no model has is a mistake
        if key != "name" and not settings_of(key):
            raise ConfigError(f"{config}: model.{key}: not a setting of any model (`stmgt models NAME`"
                              " lists a model's settings)")
    raws = {m: shared_for(base_raw, m) for m in sorted(set(trains.values()))}  # each model's share of the config
    for model, raw in raws.items():  # the shared values themselves, before any variant overrides them
        load_config(config, {"model.name": model}, raw=raw)
    base = {**PROTOCOLS[protocol], "data.source": data, "data.format": data_format, "train.max_epochs": max_epochs}
    cfg0 = load_config(config, base, options, raw={**base_raw, "model": {}})
    panel = load_source(cfg0.data)
    name = result_name(data, protocol, name)
    path = out / f"{name}.json"
    res = _read(path)
    if res.get("runs") and res.get("split", "test") != split:
        raise ConfigError(f"{path} holds {res.get('split', 'test')}-split results; scoring on {split} would mix"
                          " the two (choose another --name)")
    res.update({"data": data, "protocol": protocol, "split": split,
                "protocol_text": protocol_text(protocol, panel.name, cfg0, split)})
    todo = [(model, seed) for model in models for seed in range(seeds)]
    for k, (model, seed) in enumerate(todo, 1):
        key = f"{model}/seed{seed}"
        run_dir = out / "runs" / name / model / f"seed{seed}"
        done = _read(path)["runs"].get(key)
        partial = done is not None and done.get("stop_reason") == "budget"
        if done is not None and not partial:
            continue  # finished runs are kept; a budget-stopped one is resumed, or retrained without its folder
        last = run_dir / "checkpoints" / "last.ckpt"
        resume = last if partial and last.is_file() else None
        claim = _claim(run_dir)
        if claim is None:
            continue  # another process is training this run
        own = overrides.get(model, {})
        cfg = load_config(config, {**base, "model.name": trains[model], **own, "train.seed": seed}, options,
                          raw=raws[trains[model]])
        t0 = time.perf_counter()
        with claim:
            (run_dir / ".running").unlink(missing_ok=True)  # where older versions kept the lock
            adopted = trained_with(run_dir, cfg)  # finished with these very settings: its result unrecorded,
            if adopted:                              # copied in, or a recorded budget-stopped one it replaces
                run = TrainedRun(run_dir)
                if not quiet:
                    notice(f"[{k}/{len(todo)}] {key}: {run_dir} is a finished run of this config; scoring it",
                           sys.stdout)
            else:
                left = None if resume is not None else leftover_checkpoint(run_dir, cfg)
                if left is not None:
                    resume = left[0]
                    if not quiet:
                        notice(f"[{k}/{len(todo)}] {key}: an unfinished training of this config (stopped in epoch"
                               f" {left[1]}) is resumed from {resume}", sys.stdout)
                elif resume is not None and not quiet:
                    notice(f"[{k}/{len(todo)}] {key}: stopped by its time budget at epoch {done['epochs']};"
                           f" resuming from {last}", sys.stdout)
                run = fit(cfg, run_dir, panel=panel, overwrite=True,  # a seed that crashed before its result
                          resume=resume, quiet=quiet, label=f"[{k}/{len(todo)}] {model} seed {seed}")
            metrics, _ = forecast_split(run.forecaster(calibrated=False), run.data(panel), split)
        metrics.update(run.training())  # epochs, best_epoch, stop_reason, train_seconds, ...
        metrics.update(curve(run))
        metrics["seconds"] = time.perf_counter() - t0  # this invocation's training and test evaluation
        metrics.setdefault("train_seconds", metrics["seconds"])  # trained runs: every invocation's training
        with _locked(path):  # merge with runs other processes finished meanwhile (and notes added by hand)
            disk = _read(path)
            res["runs"] = {**disk["runs"], key: metrics}
            res["notes"] = disk.get("notes", [])
            path.write_text(json.dumps(res, indent=1))
        if not quiet:
            notice(f"[{k}/{len(todo)}] {key}: {split} MAE avg {metrics['mae']['avg']:.3f}"
                   f" ({duration(metrics['train_seconds'])})", sys.stdout)
    with _locked(path):
        disk = _read(path)
        res["runs"] = {**res["runs"], **disk["runs"]}
        notes = disk.get("notes", res.get("notes", []))
    rows = {}
    for key, m in res["runs"].items():
        rows.setdefault(key.split("/")[0], []).append(m)
    horizons = reported_horizons(cfg0.data.horizon)
    by_seeds: dict[int, list[str]] = {}  # one command per number of seeds the table holds
    for model, runs in rows.items():
        by_seeds.setdefault(len(runs), []).append(model)
    commands = [f"`stmgt benchmark --data {data} --models {' '.join(ms)} --seeds {n} --protocol {protocol}"
                + (f" --config {config}" if config else "") + (f" --name {name}" if name != result_name(data, protocol)
                                                               else "")
                + (f" --split {split}" if split != "test" else "") + "`" for n, ms in by_seeds.items()]
    partial = sorted(k for k, m in res["runs"].items() if m.get("stop_reason") == "budget")
    note = ([f"**Still partial** (stopped by their time budget, `train.max_minutes`; the next `stmgt benchmark`"
             f" resumes each from its checkpoint while its run folder is there): {', '.join(partial)}.", ""]
            if partial else [])
    unfinished = [k for k in unfinished_runs(out / "runs" / name) if k not in res["runs"]]
    if unfinished:
        note += [f"**Not in the table yet** (their training was stopped by a signal or killed; the next `stmgt"
                 f" benchmark` of the same config continues each from its last checkpoint): {', '.join(unfinished)}.",
                 ""]
    md = [f"# Benchmark: {name}", "", res["protocol_text"], "", *note,
          metrics_table_markdown(rows, horizons=horizons), "",
          probabilistic_table_markdown(rows), "", training_table_markdown(res["runs"]), "",
          "Regenerate: " + "; then ".join(commands) + "."]
    if notes:  # the results JSON's "notes": sentences kept by hand (runs stopped by hand, caveats)
        md += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    return res
