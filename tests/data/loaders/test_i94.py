"""I-94 loader: the real UCI CSV (gaps, duplicate hours, Kelvin) and malformed small copies."""

from __future__ import annotations

import numpy as np
import pytest

from stmgt.data.loaders import detect_format, load, load_i94
from stmgt.errors import DataError

HEADER = "holiday,temp,rain_1h,snow_1h,clouds_all,weather_main,weather_description,date_time,traffic_volume\n"


@pytest.mark.shared_data
def test_real_i94(i94):
    assert detect_format(i94) == "i94"
    p = load(i94)
    assert p.num_nodes == 1 and p.edge_index.shape == (2, 0) and p.units == "veh/h"
    assert p.interval_minutes == 60
    assert str(p.timestamps[0]).startswith("2012-10-02T09:00")
    assert str(p.timestamps[-1]).startswith("2018-09-30T23")
    assert p.num_steps == 52551  # every hour of the span; 40,575 distinct hours in the file
    assert int(p.mask.sum()) == 40575 - 2  # the two zero-volume hours are masked
    assert p.values[p.mask].max() == 7280
    assert p.covariate_names == ["temperature", "precipitation", "clouds_all"]
    cov = p.covariates
    assert np.isfinite(cov).all()
    assert -35 < cov[:, 0].min() and cov[:, 0].max() < 40  # °C, the 0 K rows dropped
    assert 0 <= cov[:, 1].min() and cov[:, 1].max() < 100  # the 9831 mm outlier dropped
    assert 0 <= cov[:, 2].min() and cov[:, 2].max() <= 100


def test_small_file(tmp_path):
    rows = [
        "None,280.15,0.5,0.25,40,Rain,light rain,2020-01-01 00:00:00,100",
        "None,280.15,0.5,0.25,40,Mist,mist,2020-01-01 00:00:00,100",  # duplicate hour -> first row
        "None,0,0,0,90,Clouds,overcast,2020-01-01 01:00:00,0",  # 0 K invalid, zero volume masked
        "New Years Day,282.15,0,0,20,Clear,sky is clear,2020-01-01 03:00:00,300",  # 02:00 missing
    ]
    f = tmp_path / "Metro_Interstate_Traffic_Volume.csv"
    f.write_text(HEADER + "\n".join(rows) + "\n")
    p = load_i94(f)
    assert p.values.shape == (4, 1, 1)
    assert p.mask[:, 0, 0].tolist() == [True, False, False, True]
    assert p.covariates[:, 0].tolist() == pytest.approx([7.0, 7.0, 7.0, 9.0])
    assert p.covariates[0, 1] == pytest.approx(0.75)  # rain + snow
    assert p.covariates[:, 2].tolist() == [40, 90, 90, 20]
    assert load_i94(f, zero_is_missing=False).mask[1, 0, 0]


def test_errors(tmp_path):
    f = tmp_path / "Metro_Interstate_Traffic_Volume.csv"
    with pytest.raises(DataError, match="not found"):
        load_i94(tmp_path)
    f.write_text("date_time,traffic_volume\n2020-01-01 00:00:00,1\n")
    with pytest.raises(DataError, match="missing column\\(s\\) temp, rain_1h, snow_1h, clouds_all"):
        load_i94(f)
    f.write_text(HEADER + "None,280,0,0,1,a,b,2020-01-01 00:00:00,1\nNone,280,0,0,1,a,b,yesterday,2\n")
    with pytest.raises(DataError, match="line 3: date_time 'yesterday'"):
        load_i94(f)
