"""The ``stmgt`` command line.

Every command prints a one-line ``stmgt: error: ...`` and exits with status 2 for a user
mistake (bad file, bad option, missing run folder) instead of a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import types
from contextlib import contextmanager
from pathlib import Path

from stmgt.config import DataConfig, SyntheticConfig, TrainConfig
from stmgt.console import duration, notice
from stmgt.errors import Interrupted, StmgtError, one_line_warnings, warn
from stmgt.registry import DEFAULT_MODEL, model_names

EPILOG = """examples:
  stmgt demo --out runs/demo                          train, evaluate and forecast on the synthetic city
  stmgt data synth --out data/city --nodes 62 --days 28
  stmgt train --data synthetic --out runs/stmgt       (or --data PATH to a dataset folder)
  stmgt evaluate runs/stmgt --json
  stmgt predict runs/stmgt --input recent.csv --output forecast.csv
  stmgt serve runs/demo                               (then: stmgt replay synthetic --to http://127.0.0.1:8000)
  stmgt models gwnet                                  a model's settings (the config's model section)
"""


def _default(section, key: str) -> str:
    """A config setting's default as help text shows it (``100``), read from the config class."""
    value = section.model_fields[key].default
    return f"{value:g}" if isinstance(value, float) else str(value)



def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config with data/model/train sections "
                   "(defaults: the original STMGT design's)")
    p.add_argument("--data", help="'synthetic' (default) or a dataset folder/file")
    p.add_argument("--format", help="force the dataset format (tgcn, metr, pems, hcmc, i94, montevideo, city, panel)")
    p.add_argument("--model", help=f"model name: {', '.join(model_names())} (default {DEFAULT_MODEL});"
                                    " `stmgt models NAME` lists a model's settings")
    p.add_argument("--max-epochs", type=int,
                   help=f"at most this many epochs (default {_default(TrainConfig, 'max_epochs')})")
    p.add_argument("--seed", type=int, help=f"random seed (default {_default(TrainConfig, 'seed')})")
    p.add_argument("--history", type=int, help=f"input steps (default {_default(DataConfig, 'history')})")
    p.add_argument("--horizon", type=int, help=f"forecast steps (default {_default(DataConfig, 'horizon')})")
    p.add_argument("--batch-size", type=int,
                   help=f"windows per batch (default {_default(TrainConfig, 'batch_size')})")
    p.add_argument("--devices", type=int,
                   help=f"processes/devices for data-parallel training (default {_default(TrainConfig, 'devices')})")
    p.add_argument("--accelerator", choices=["cpu", "gpu", "cuda", "auto"],
                   help=f"default {_default(TrainConfig, 'accelerator')}")
    p.add_argument("--nodes", type=int,
                   help=f"synthetic city: sensor locations (default {_default(SyntheticConfig, 'nodes')})")
    p.add_argument("--days", type=float,
                   help=f"synthetic city: days of data (default {_default(SyntheticConfig, 'days')})")
    _add_threads_option(p)


def _add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="CPU threads (default: the usable CPUs less those other processes"
                   " keep busy, re-checked while training; OMP_NUM_THREADS also fixes it)")


def _overrides(a: argparse.Namespace) -> dict:
    data = a.data
    return {
        "data.source": data, "data.format": a.format, "data.history": a.history, "data.horizon": a.horizon,
        "data.synthetic.nodes": a.nodes, "data.synthetic.days": a.days,
        "model.name": a.model, "train.max_epochs": a.max_epochs, "train.seed": a.seed,
        "train.batch_size": a.batch_size, "train.devices": a.devices, "train.accelerator": a.accelerator,
        "train.num_threads": a.threads,
    }


# the command-line option each override key comes from: a bad value is blamed on the option, not the config file
_OPTIONS = {
    "data.source": "--data", "data.format": "--format", "data.history": "--history", "data.horizon": "--horizon",
    "data.synthetic.nodes": "--nodes", "data.synthetic.days": "--days", "model.name": "--model",
    "train.max_epochs": "--max-epochs", "train.seed": "--seed", "train.batch_size": "--batch-size",
    "train.devices": "--devices", "train.accelerator": "--accelerator", "train.num_threads": "--threads",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``stmgt`` parser: one subparser per command, each added by its ``_add_*_parser``."""
    ap = argparse.ArgumentParser(prog="stmgt", description="Probabilistic traffic forecasting on road networks "
                                 "(STMGT, STMamba and baselines).", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"stmgt {__import__('stmgt').__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    _add_data_parser(sub)
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_predict_parser(sub)
    _add_calibrate_parser(sub)
    _add_benchmark_parser(sub)
    _add_speed_parser(sub)
    _add_serve_parser(sub)
    _add_replay_parser(sub)
    _add_models_parser(sub)
    _add_demo_parser(sub)
    return ap


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    """``stmgt data synth|check|fetch``: make, check or fetch datasets."""
    d = sub.add_parser("data", help="make, check or fetch datasets")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    s = dsub.add_parser("synth", help="write the synthetic city to a folder (panel.npz + meta.json)")
    s.add_argument("--out", required=True, help="output folder")
    city = SyntheticConfig()  # the synthetic city's defaults, one place
    s.add_argument("--nodes", type=int, default=city.nodes, help=f"sensor locations (default {city.nodes})")
    s.add_argument("--days", type=float, default=city.days, help=f"days of data (default {city.days:g})")
    s.add_argument("--interval", type=int, default=city.interval_minutes,
                   help=f"minutes between steps (default {city.interval_minutes})")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c = dsub.add_parser("check", help="load a dataset folder and print what was found")
    c.add_argument("path", help="dataset folder or file")
    c.add_argument("--format", help="force the format")
    c.add_argument("--dayfirst", action=argparse.BooleanOptionalAction, default=None,
                   help="own-city dates: --dayfirst reads 03/04/2024 as 3 April (dd/mm/yyyy), --no-dayfirst as"
                        " March 4 (mm/dd/yyyy); needed when no day is above 12")
    c.add_argument("--timestamp-format", help="own-city dates: strftime codes, e.g. '%%d.%%m.%%Y %%H:%%M'")
    c.add_argument("--interval", help="own-city grid interval, e.g. 5min or 1h (default: inferred)")
    f = dsub.add_parser("fetch", help="download a public benchmark dataset (sha256-checked, resumable)")
    f.add_argument("name", help="dataset name: los_loop, metr_la_graph, montevideo_bus, i94, birmingham_parking, "
                                "nyc_taxi_od")
    f.add_argument("--dir", required=True, help="destination folder")


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    """``stmgt train``: the training options, resuming and the run folder."""
    t = sub.add_parser("train", help="train a model into a run folder")
    _add_train_options(t)
    t.add_argument("--resume", help="continue the run that holds this checkpoint (RUN_DIR/checkpoints/last.ckpt);"
                                    " --out and --config default to that run's folder and config.yaml")
    t.add_argument("--out", help="run folder to write (written as a unit once training completes)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out once the new one is complete")
    _add_quiet_option(t)


def _add_quiet_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print no progress and no per-epoch lines, only errors and the final summary")


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """``stmgt evaluate RUN_DIR``: metrics, report and plots on a split."""
    e = sub.add_parser("evaluate", help="metrics, report and plots of a run on a split")
    e.add_argument("run_dir")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--json", action="store_true", help="print one JSON object with the metrics")
    e.add_argument("--no-plots", action="store_true", help="skip the figures")
    e.add_argument("--plot-step", type=int, metavar="STEP", help="the horizon step of the forecast figure"
                   " (figures/forecasts_stepSTEP.png; default: the last reported horizon, 12 of 12)")


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    """``stmgt predict RUN_DIR``: the input and output files and what input is accepted."""
    p = sub.add_parser("predict", help="forecast from a file of recent observations")
    p.add_argument("run_dir")
    p.add_argument("--input", required=True, help="CSV/parquet: timestamp,node_id,value[,covariates]; the window"
                   " is the run's history steps ending at its latest timestamp")
    p.add_argument("--output", required=True, help=".csv, .parquet or .json (records), by extension: means and"
                   " quantiles per step and node; written atomically, never over --input")
    p.add_argument("--stream", action="store_true", help="feed the steps one at a time (STMamba)")
    p.add_argument("--min-coverage", type=float, default=0.5, metavar="FRACTION",
                   help="refuse input where fewer than this fraction of the window's (step, node) cells hold a"
                        " reading (default 0.5)")
    p.add_argument("--allow-missing-nodes", action="store_true",
                   help="forecast nodes that have no reading in the window (named in a warning) instead of refusing")
    p.add_argument("--allow-gap", action="store_true",
                   help="accept a latest timestamp more than the history after the end of the run's data")


def _add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    """``stmgt calibrate RUN_DIR``."""
    k = sub.add_parser("calibrate", help="fit a per-step spread correction on the validation split")
    k.add_argument("run_dir")


def _add_benchmark_parser(sub: argparse._SubParsersAction) -> None:
    """``stmgt benchmark``: models x seeds under one protocol."""
    r = sub.add_parser("benchmark", help="train and evaluate several models x seeds under one protocol")
    r.add_argument("--data", default="synthetic", help="'synthetic' or a dataset folder")
    r.add_argument("--format", help="force the dataset format")
    r.add_argument("--models", nargs="+", default=["last_value", "historical_average", "gru", "stid", "gwnet", "stmgt"],
                   help="models, or variants named under models: in --config (e.g. stmgt_flat)")
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--protocol", choices=["standard", "tgcn"], default="standard")
    r.add_argument("--config", help="YAML config applied to every model (model.name is set per model)")
    r.add_argument("--max-epochs", type=int, help="epoch budget per run (default: the config's, 100)")
    r.add_argument("--out", default="benchmarks/results", help="folder for <name>.json, <name>.md and runs/")
    r.add_argument("--name", help="result file stem (default: the dataset folder name)")
    r.add_argument("--split", choices=["test", "val"], default="test",
                   help="split every run is scored on (val: an ablation chosen on validation; test untouched)")
    _add_quiet_option(r)


def _add_speed_parser(sub: argparse._SubParsersAction) -> None:
    """``stmgt speed`` (alias ``bench``): the scaled synthetic graph and what is timed."""
    b = sub.add_parser("speed", aliases=["bench"],
                       help="training/inference speed, FLOPs and memory on a scaled synthetic graph")
    b.add_argument("--model", default=DEFAULT_MODEL, choices=model_names())
    b.add_argument("--nodes", type=int, default=62)
    b.add_argument("--batch", type=int, default=32)
    b.add_argument("--history", type=int, default=12)
    b.add_argument("--horizon", type=int, default=12)
    b.add_argument("--device", default="cpu", help="cpu or cuda")
    b.add_argument("--precision", default="32", choices=["32", "bf16-mixed", "auto", "both"],
                   help="32, bf16-mixed, auto (bf16 where the CPU has AVX512-BF16/AMX) or both (one result each);"
                        " every result has the matmul peak of its precision and the fraction of it achieved")
    b.add_argument("--compile", action="store_true", help="torch.compile the model")
    b.add_argument("--checkpoint", action="store_true",
                   help="recompute block activations in backward (memory; models with a checkpoint setting: stmgt)")
    b.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    b.add_argument("--return-memory", action="store_true",
                   help="let malloc unmap freed blocks (glibc default) instead of keeping them for reuse")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    _add_threads_option(b)


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:
    """``stmgt serve RUN_DIR...``: address, store, limits and the forecast issuer."""
    v = sub.add_parser("serve", help="serve live forecasts over HTTP (observations in, forecasts out, a live map)")
    v.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="trained run folders (same node set)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    v.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    v.add_argument("--db", default="stmgt-serve.db", help="observation store: a SQLite file (default"
                   " stmgt-serve.db) or a SQLAlchemy URL")
    v.add_argument("--api-key-env", metavar="NAME", help="environment variable holding the API key that writes need")
    v.add_argument("--retention-days", type=float, default=7.0, help="keep observations and forecasts this many"
                   " days after they were acknowledged, on the server's clock (default 7; 0: keep everything)")
    v.add_argument("--max-batch", type=int, default=5000, help="most observations per POST (default 5000)")
    v.add_argument("--max-future-hours", type=float, default=24.0,
                   help="refuse timestamps further ahead of the server clock (default 24)")
    v.add_argument("--earliest", default="1970-01-01", help="refuse timestamps before this date (default"
                   " 1970-01-01)")
    v.add_argument("--plausible-std", type=float, default=6.0, help="a reading further than this many training"
                   " standard deviations from the training mean is stored flagged and treated as missing"
                   " (default 6)")
    v.add_argument("--value-range", metavar="LO:HI|FILE", help="the plausible range of every road (e.g. 0:200),"
                   " or a CSV file node_id,low,high with one per road (instead of --plausible-std)")
    v.add_argument("--score-window-hours", type=float, default=24.0, help="live scores over this many hours"
                   " of forecast targets (default 24)")
    v.add_argument("--no-auto-forecast", action="store_true", help="issue forecasts only when asked (default:"
                   " also whenever new observations arrive, so that live scoring has forecasts)")
    v.add_argument("--threads", type=int, default=1, help="torch threads for forecasts (default 1)")


def _add_replay_parser(sub: argparse._SubParsersAction) -> None:
    """``stmgt replay DATA``: the service, the pace and the synthetic city."""
    y = sub.add_parser("replay", help="stream a dataset's observations into a running `stmgt serve`")
    y.add_argument("data", help="'synthetic' or a dataset folder/file")
    y.add_argument("--to", required=True, help="the service's base URL, e.g. http://127.0.0.1:8000")
    y.add_argument("--speed", type=float, default=60.0, help="seconds of data per second (default 60;"
                   " 0: as fast as the service acknowledges)")
    y.add_argument("--start", default="test", help="a split (train, val, test; default test) or a timestamp")
    y.add_argument("--api-key-env", metavar="NAME", help="environment variable holding the service's API key")
    y.add_argument("--batch", type=int, default=500, help="most observations per request (default 500)")
    y.add_argument("--steps", type=int, help="stop after this many time steps")
    y.add_argument("--retries", type=int, default=5, help="retries of a batch when the service is unreachable")
    y.add_argument("--format", help="force the dataset format")
    city = SyntheticConfig()
    y.add_argument("--nodes", type=int, default=city.nodes,
                   help=f"synthetic city: sensor locations (default {city.nodes})")
    y.add_argument("--days", type=float, default=city.days,
                   help=f"synthetic city: days of data (default {city.days:g})")
    y.add_argument("--seed", type=int, default=0, help="synthetic city: seed (default 0)")


def _add_models_parser(sub: argparse._SubParsersAction) -> None:
    """``stmgt models [NAME]``."""
    o = sub.add_parser("models", help="the models, or one model's settings with their defaults")
    o.add_argument("name", nargs="?", help="a model name: print its settings (the config's model section)")
    o.add_argument("--yaml", action="store_true", help="print the settings as a YAML model section to edit")


def _add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """``stmgt demo``: synthetic city -> train -> evaluate -> forecast."""
    m = sub.add_parser("demo", help="the main job: synthetic city -> train -> evaluate -> forecast")
    m.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    m.add_argument("--max-epochs", type=int, default=5, help="epochs (default 5: about 10 minutes on 2 cores)")
    m.add_argument("--days", type=float, default=10, help="days of synthetic data (default 10)")
    m.add_argument("--seed", type=int, default=0)
    _add_threads_option(m)
    _add_quiet_option(m)


def _cmd_data(a) -> int:
    if a.data_command == "synth":
        from stmgt.config import load_config
        from stmgt.data.synthetic import synthetic_city
        from stmgt.paths import ensure_writable_dir

        options = {"data.synthetic.nodes": "--nodes", "data.synthetic.days": "--days",
                   "data.synthetic.interval_minutes": "--interval", "data.synthetic.seed": "--seed"}
        c = load_config(None, {key: getattr(a, opt[2:]) for key, opt in options.items()}, options).data.synthetic
        ensure_writable_dir(a.out, "--out")
        t0 = time.perf_counter()
        panel = synthetic_city(num_nodes=c.nodes, days=c.days, interval_minutes=c.interval_minutes, seed=c.seed)
        panel.save(a.out)
        print(panel.summary())
        print(f"wrote {Path(a.out) / 'panel.npz'} in {time.perf_counter() - t0:.1f}s")
        return 0
    if a.data_command == "check":
        from stmgt.data.loaders import check

        opts = {"dayfirst": a.dayfirst, "timestamp_format": a.timestamp_format, "interval": a.interval}
        panel, findings = check(a.path, format=a.format, **{k: v for k, v in opts.items() if v is not None})
        print(panel.summary())
        for line in findings:
            print(f"  {line}")
        return 0
    if a.data_command == "fetch":
        from stmgt.data.fetch import fetch
        from stmgt.paths import ensure_writable_dir

        ensure_writable_dir(a.dir, "--dir")
        path = fetch(a.name, a.dir)
        print(f"{a.name}: ready in {path}")
        return 0
    raise StmgtError("choose an action: stmgt data synth|check|fetch (see stmgt data --help)")


def _cmd_train(a) -> int:
    from stmgt.config import load_config
    from stmgt.training.fit import fit, interrupted_target, resume_run_dir

    if a.resume and not Path(a.resume).is_file():
        raise StmgtError(f"{a.resume}: no checkpoint to resume from (look for RUN_DIR/checkpoints/last.ckpt)")
    source = resume_run_dir(a.resume) if a.resume else None
    out = a.out or (interrupted_target(source) if source is not None else None)
    if out is None:
        raise StmgtError("stmgt train needs --out RUN_DIR (the folder to write the run to)"
                         if not a.resume else f"--resume {a.resume}: not in a RUN_DIR/checkpoints folder; name"
                         " the run folder to write with --out")
    config = a.config or (str(source / "config.yaml") if source is not None else None)
    cfg = load_config(config, _overrides(a), _OPTIONS, saved_run=a.config is None and source is not None)
    t0 = time.perf_counter()
    run = fit(cfg, out, resume=a.resume, overwrite=a.overwrite, quiet=a.quiet)
    print(f"trained {cfg.model.name} in {duration(time.perf_counter() - t0)} -> {run.dir}")
    print(f"next: stmgt evaluate {run.dir}")
    return 0


def _cmd_evaluate(a) -> int:
    from stmgt.evaluation.run_evaluation import evaluate_run

    res = evaluate_run(a.run_dir, split=a.split, plots=not a.no_plots, progress=not a.json,
                       plot_step=a.plot_step)  # its warnings (losing to a baseline, coverage off) go to stderr
    if a.json:
        print(json.dumps(res))
    else:
        m = res
        print(f"{a.split}: MAE {_by_horizon(m['mae'], 3)} | CRPS {m['crps']:.3f} | coverage80 {m['coverage80']:.3f}")
        for name, b in res["baselines"].items():
            print(f"  {name}: MAE avg {b['mae']['avg']:.3f}")
        print(f"report: {Path(a.run_dir) / 'report.md'}")
    return 0


def _cmd_predict(a) -> int:
    from stmgt.predict import predict_file

    out = predict_file(a.run_dir, a.input, a.output, stream=a.stream, min_coverage=a.min_coverage,
                       allow_missing_nodes=a.allow_missing_nodes, allow_gap=a.allow_gap)
    print(f"wrote {out}")
    return 0


def _cmd_calibrate(a) -> int:
    from stmgt.forecaster import calibrate_run

    res = calibrate_run(a.run_dir)
    f = res["factors"]
    print(f"spread factors per step: {', '.join(f'{x:.2f}' for x in f)}")
    print(f"stored in {Path(a.run_dir) / 'calibration.json'}; `stmgt evaluate` and `stmgt predict` apply it")
    return 0


def _cmd_benchmark(a) -> int:
    from stmgt.benchmark import result_name, run_benchmark
    from stmgt.paths import ensure_writable_dir

    ensure_writable_dir(a.out, "--out")
    res = run_benchmark(a.data, a.models, a.seeds, a.out, a.name, a.protocol, a.config, a.max_epochs, a.format,
                        options=_OPTIONS, quiet=a.quiet, split=a.split)
    print(f"{len(res['runs'])} runs; table: {Path(a.out) / result_name(a.data, a.protocol, a.name)}.md")
    return 0


def _by_horizon(metric: dict, digits: int) -> str:
    """``h3 1.23  h6 2.34  avg 1.90``: the horizons a metrics dict holds (fewer for short horizons)."""
    parts = [f"h{k} {v:.{digits}f}" for k, v in metric.items() if k.isdigit()]
    return "  ".join(parts + [f"avg {metric['avg']:.{digits}f}"])


def _cmd_speed(a) -> int:
    from stmgt.runtime import require_cuda, resolve_precision
    from stmgt.speed import bench

    if a.device.startswith("cuda"):
        require_cuda(f"--device is {a.device!r}")
    accel = "cuda" if a.device.startswith("cuda") else "cpu"
    precisions = ["32", "bf16-mixed"] if a.precision == "both" else [resolve_precision(a.precision, accel)]
    for i, precision in enumerate(precisions):
        res = bench(a.model, a.nodes, a.batch, a.history, a.horizon, a.device, a.steps, precision, a.compile,
                    checkpoint=a.checkpoint, keep_memory=not a.return_memory)
        print(json.dumps(res) if a.json else ("\n" if i else "") + _speed_text(res))
    return 0


def _speed_text(res: dict) -> str:
    """``key: value`` lines of one speed result; a training figure of a model that is not trained reads
    ``not trained``."""
    return "\n".join(f"{k}: {'not trained' if v is None and not res['trainable'] else v}" for k, v in res.items())


def _cmd_models(a) -> int:
    from stmgt.registry import MODELS, model_class

    if not a.name:
        width = max(map(len, MODELS))
        for name in MODELS:
            print(f"{name:<{width}}  {model_class(name).paper}")
        print("\n`stmgt models NAME` lists a model's settings; set them under the config's model section.")
        return 0
    if a.name not in MODELS:
        raise StmgtError(f"no model {a.name!r}; the models are {', '.join(MODELS)}")
    import yaml

    from stmgt.config import model_config

    cls = model_class(a.name)
    defaults = model_config(a.name).model_dump(mode="json")
    if a.yaml:
        print(yaml.safe_dump({"model": defaults}, sort_keys=False), end="")
        return 0
    print(f"{a.name}: {cls.paper}\nsettings of the config's model section (default, meaning):")
    rows = [(k, json.dumps(defaults[k]), " ".join((f.description or "").split()))
            for k, f in cls.Config.model_fields.items() if k != "name"]
    kw, vw = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for key, value, what in rows:
        print(f"  {key:<{kw}}  {value:<{vw}}  {what}")
    return 0


class Steps:
    """The numbered steps of a long command, each one's line ``[k/n] what`` then ``[k/n] what: done in
    6m12s`` (plus the note the step sets) on ``stream`` (default stdout); nothing where ``quiet``."""

    def __init__(self, n: int, quiet: bool = False, stream=None, clock=time.perf_counter):
        self.n, self.k, self.quiet, self.stream, self.clock = n, 0, quiet, stream, clock
        self.t0 = clock()

    def _say(self, text: str) -> None:
        if not self.quiet:
            notice(text, self.stream if self.stream is not None else sys.stdout)

    @contextmanager
    def step(self, what: str, detail: str = ""):
        """Time the block as the next step: ``[k/n] what detail`` before it, ``[k/n] what: done in ...`` after
        it (not when it fails). The yielded object's ``note`` is added to the second line."""
        self.k += 1
        self._say(f"[{self.k}/{self.n}] {what}{detail}")
        t0, result = self.clock(), types.SimpleNamespace(note="")
        yield result
        note = f"; {result.note}" if result.note else ""
        self._say(f"[{self.k}/{self.n}] {what}: done in {duration(self.clock() - t0)}{note}")

    def total(self) -> str:
        """The time since the steps began (``6m40s``)."""
        return duration(self.clock() - self.t0)


def _cmd_demo(a) -> int:
    from stmgt.config import load_config
    from stmgt.data.source import load_source
    from stmgt.evaluation.run_evaluation import evaluate_run
    from stmgt.predict import predict_file, write_recent_observations
    from stmgt.training.fit import fit

    out = Path(a.out)
    cfg = load_config(None, {"data.synthetic.days": a.days, "train.max_epochs": a.max_epochs, "train.seed": a.seed,
                                  "train.num_threads": a.threads},
                      _OPTIONS)
    steps = Steps(4, quiet=a.quiet)
    with steps.step("making the synthetic city", f" ({cfg.data.synthetic.days:g} days)") as s:
        panel = load_source(cfg.data)
        s.note = panel.summary()
    with steps.step("training STMGT", f" for at most {a.max_epochs} epochs -> {out}"):
        run = fit(cfg, out, panel=panel, overwrite=True, quiet=a.quiet)  # the demo re-runs into its own folder
    with steps.step("evaluating", " on the test split (with baselines, plots, report)"):
        res = evaluate_run(out, panel=panel, progress=not a.quiet)
    with steps.step("forecasting", f" from the last {cfg.data.history} observed steps") as s:
        recent = write_recent_observations(run, panel, out / "recent_observations.csv")
        s.note = f"-> {predict_file(out, recent, out / 'forecast.csv')}"
    base = res["baselines"]
    print(f"test MAE (km/h) {_by_horizon(res['mae'], 2)};  last value avg {base['last_value']['mae']['avg']:.2f};"
          f"  historical average avg {base['historical_average']['mae']['avg']:.2f}")
    print(f"done in {steps.total()}. report: {out / 'report.md'}")
    return 0


def _api_key(name: str | None) -> str | None:
    import os

    if not name:
        return None
    key = os.environ.get(name, "")
    if not key:
        raise StmgtError(f"--api-key-env {name}: the environment variable {name} is not set or empty")
    return key


def _cmd_serve(a) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise StmgtError("stmgt serve needs the serve extra: pip install 'stmgt[serve]'") from None
    import torch

    from stmgt.serve.app import Service, create_app

    if not 0 <= a.port <= 65535:
        raise StmgtError(f"--port {a.port}: give a port between 1 and 65535 (0: any free port)")
    torch.set_num_threads(max(1, a.threads))
    key = _api_key(a.api_key_env)
    sock = _listen(a.host, a.port)  # before loading anything: a taken port is refused at once
    service = Service(a.run_dirs, db=a.db, api_key=key, retention_days=a.retention_days, max_batch=a.max_batch,
                      max_future_hours=a.max_future_hours, score_window_hours=a.score_window_hours,
                      auto_forecast=not a.no_auto_forecast, earliest=a.earliest, plausible_std=a.plausible_std,
                      value_range=a.value_range)
    for m in service.models.values():
        print(f"serving {m.name} (version {m.version}, {m.model_name}, {len(m.node_ids)} nodes)")
    for m in service.models.values():
        if not m.calibrated:
            warn(f"{m.dir} is not calibrated: its 80% and 90% intervals are the model's raw spread; run"
                 f" `stmgt calibrate {m.dir}` (fitted on its validation split), then restart the service")
    port = sock.getsockname()[1]
    from stmgt.serve.store import _hide_password

    print(f"store: {_hide_password(a.db) if '://' in a.db else a.db}; writes"
          f" {'need the API key' if key else 'are open (no --api-key-env)'}; map: http://{a.host}:{port}/", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        service.store.close()
    return 0


def _listen(host: str, port: int):
    """A listening socket on ``host:port`` (a taken port or an unknown host is one line, before the models load)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise StmgtError(f"--host {host!r}: not an address of this machine ({e})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise StmgtError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); is another"
                         " service on that port? give another --port") from None
    sock.set_inheritable(True)
    return sock


def _cmd_replay(a) -> int:
    from stmgt.serve.replay import check_url, load_panel, replay

    check_url(a.to)
    panel = load_panel(a.data, a.format, a.nodes, a.days, a.seed)
    print(f"replaying {panel.summary().splitlines()[0]} -> {a.to} (speed {a.speed:g}, from {a.start})")
    replay(panel, a.to, speed=a.speed, start=a.start, batch=a.batch, api_key=_api_key(a.api_key_env),
           max_steps=a.steps, retries=a.retries)
    return 0


COMMANDS = {"data": _cmd_data, "train": _cmd_train, "evaluate": _cmd_evaluate, "predict": _cmd_predict,
            "calibrate": _cmd_calibrate, "benchmark": _cmd_benchmark,
            "speed": _cmd_speed, "bench": _cmd_speed, "models": _cmd_models, "demo": _cmd_demo, "serve": _cmd_serve,
            "replay": _cmd_replay}


# commands whose computation sizes its threads to the free CPUs here (training does so in fit, serve has --threads)
_SIZES_THREADS = {"evaluate", "predict", "calibrate", "speed", "bench"}


def _os_error(e: OSError) -> str:
    """``path: Permission denied`` (or ``a -> b: ...`` for a rename/copy), else the error's own text."""
    if not e.strerror:
        return " ".join(str(e).split()) or type(e).__name__
    names = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{names}: {e.strerror}" if names else e.strerror


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    if not a.command:
        ap.print_help()
        return 0
    try:
        with one_line_warnings():
            if a.command in _SIZES_THREADS:
                from stmgt.runtime import choose_threads

                choose_threads(getattr(a, "threads", None))
            return COMMANDS[a.command](a)
    except Interrupted as e:
        print(f"stmgt: {e}", file=sys.stderr)
        return e.exit_code
    except StmgtError as e:
        print(f"stmgt: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader stopped reading (`stmgt models stmgt | head`): nothing went wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except OSError as e:  # permission denied, disk full, a file that vanished: the system's word, one line
        if isinstance(e, io.UnsupportedOperation) or os.environ.get("STMGT_TRACEBACK"):
            raise  # a misuse of a file object is a bug; STMGT_TRACEBACK=1 shows where any OSError came from
        print(f"stmgt: error: {_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stmgt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
