"""Metro Interstate Traffic Volume (I-94 westbound, Minneapolis-St Paul): one sensor with weather.

Format (J. Hogue, UCI Machine Learning Repository 2019, doi:10.24432/C5X60B;
https://archive.ics.uci.edu/dataset/492/metro+interstate+traffic+volume): one CSV,
``Metro_Interstate_Traffic_Volume.csv``, columns ``holiday, temp, rain_1h, snow_1h, clouds_all,
weather_main, weather_description, date_time, traffic_volume``; MN DoT ATR station 301, hourly,
local time, 2012-10-02 09:00 .. 2018-09-30 23:00.

* Target: ``traffic_volume``, **vehicles per hour** (``units="veh/h"``). One node, no edges.
* Hourly grid from the first to the last hour; the 2,588 gaps (the longest ~10 months, to
  2015-06-11) are masked, never filled. An hour listed several times (one row per weather
  condition, 7,629 extra rows) is collapsed to its first row.
* ``traffic_volume == 0`` (two rows, 2016-07-23) is treated as a detector outage and masked
  (``zero_is_missing=True``; pass False to keep them).
* Covariates ``temperature`` (°C, from Kelvin), ``precipitation`` (mm/h, ``rain_1h + snow_1h``) and
  ``clouds_all`` (% cloud cover). Invalid weather is dropped before filling: ``temp == 0`` K (10 rows)
  and precipitation above 300 mm/h (one ``rain_1h = 9831.3``). Covariate gaps (including masked
  hours) are forward- then back-filled.
* ``holiday`` is the literal string ``"None"`` on ordinary days (read with ``keep_default_na=False``);
  it is not used as a covariate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.data.loaders.city import fill_covariates, regular_grid
from stmgt.data.panel import Panel
from stmgt.errors import DataError

FILE = "Metro_Interstate_Traffic_Volume.csv"
COLUMNS = ("temp", "rain_1h", "snow_1h", "clouds_all", "date_time", "traffic_volume")
COVARIATES = ["temperature", "precipitation", "clouds_all"]
MAX_PRECIP_MM_H = 300.0  # above the world-record hourly rainfall: a recording error


def load_i94(
    path: str | Path,
    *,
    name: str = "i94",
    units: str = "veh/h",
    zero_is_missing: bool = True,
) -> Panel:
    """Load the UCI I-94 CSV (the file, or the folder holding it).

    Args:
        path: ``Metro_Interstate_Traffic_Volume.csv`` or its folder.
        name, units: dataset name and target units.
        zero_is_missing: mask hours whose volume is exactly 0.
    """
    p = Path(path)
    f = p / FILE if p.is_dir() else p
    if not f.is_file():
        raise DataError(f"{f}: not found; download {FILE} from the UCI repository (stmgt fetch i94)")
    try:
        df = pd.read_csv(f, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{f.name}: cannot be read as CSV ({e})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{f.name}: missing column(s) {', '.join(missing)}; found: {', '.join(df.columns)}")
    t = pd.to_datetime(df["date_time"], errors="coerce", format="%Y-%m-%d %H:%M:%S")
    if t.isna().any():
        i = int(np.argmax(t.isna().to_numpy()))
        bad = df["date_time"].iloc[i]
        raise DataError(f"{f.name} line {i + 2}: date_time {bad!r} is not YYYY-mm-dd HH:MM:SS")
    num = {c: pd.to_numeric(df[c], errors="coerce") for c in COLUMNS if c != "date_time"}
    frame = pd.DataFrame(num).assign(t=t.dt.floor("h"))
    frame = frame.drop_duplicates("t", keep="first").set_index("t").sort_index()
    grid = regular_grid(frame.index[0], frame.index[-1], pd.Timedelta(hours=1))
    frame = frame.reindex(grid)

    vol = frame["traffic_volume"].to_numpy(np.float64)
    mask = np.isfinite(vol)
    if zero_is_missing:
        mask &= vol != 0

    temp = frame["temp"].where(frame["temp"] > 0) - 273.15
    precip = frame["rain_1h"].fillna(0) + frame["snow_1h"].fillna(0)
    precip = precip.where(frame["rain_1h"].notna() | frame["snow_1h"].notna())
    precip = precip.where((precip >= 0) & (precip <= MAX_PRECIP_MM_H))
    clouds = frame["clouds_all"].where((frame["clouds_all"] >= 0) & (frame["clouds_all"] <= 100))
    cov = fill_covariates(pd.DataFrame({"temperature": temp, "precipitation": precip, "clouds_all": clouds}))
    return Panel(
        values=vol[:, None, None],
        mask=mask[:, None, None],
        timestamps=grid.to_numpy(),
        edge_index=np.zeros((2, 0), np.int64),
        node_ids=["atr_301"],
        covariates=cov[COVARIATES].to_numpy(np.float32),
        covariate_names=list(COVARIATES),
        name=name,
        units=units,
    )
