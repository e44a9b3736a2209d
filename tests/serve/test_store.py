"""The observation store on its own: upserts, out-of-order rows, retention, revisions, SQLAlchemy URLs."""

import pandas as pd
import pytest

from stmgt.serve.metrics import Histogram, Metrics
from stmgt.serve.store import Store, from_seconds, to_seconds

T0 = to_seconds("2024-01-01T00:00")


def test_upsert_is_idempotent_and_replaces(tmp_path):
    s = Store(tmp_path / "a.db")
    rows = [("a", T0 + 300 * i, float(i)) for i in range(10)]
    s.ingest(rows)
    s.ingest(rows)
    assert s.count() == 10
    s.ingest([("a", T0, 99.0)])
    assert s.count() == 10
    assert s.observations(["a"], T0, T0)[0] == ("a", T0, 99.0)
    assert s.backend.query("PRAGMA journal_mode")[0][0] == "wal"


def test_out_of_order_rows_are_kept_in_time_order(tmp_path):
    s = Store(tmp_path / "a.db")
    s.ingest([("a", T0 + 600, 3.0)])
    s.ingest([("a", T0, 1.0), ("b", T0 + 300, 2.0)])
    assert [r[1] for r in s.observations(None, None, None)] == [T0, T0 + 300, T0 + 600]
    assert s.latest() == T0 + 600 and s.earliest() == T0
    assert s.latest(["b"]) == T0 + 300


def test_store_reopens_with_its_rows(tmp_path):
    Store(tmp_path / "a.db").ingest([("a", T0, 1.0)], [(T0, "temperature", 3.0)])
    s = Store(f"sqlite:///{tmp_path / 'a.db'}")
    assert s.count() == 1 and s.latest() == T0
    df = s.window_frame(["a"], T0, T0 + 300, ["temperature"])
    assert list(df.columns) == ["timestamp", "node_id", "value", "temperature"]
    assert df["timestamp"].iloc[0] == pd.Timestamp("2024-01-01") and df["temperature"].iloc[0] == 3.0


def test_retention_is_on_the_data_clock(tmp_path):
    s = Store(tmp_path / "a.db", retention_days=1)
    s.ingest([("a", T0 + 86400 + 300, 2.0), ("a", T0 + 2 * 86400, 3.0)])
    s.ingest([("a", T0, 1.0)])  # late, and already older than the retention
    s.prune()
    assert [r[1] for r in s.observations(None, None, None)] == [T0 + 86400 + 300, T0 + 2 * 86400]


def test_written_since_tells_caches_about_late_rows(tmp_path):
    s = Store(tmp_path / "a.db")
    s.ingest([("a", T0 + 3000, 1.0)])
    seq = s.seq
    assert not s.written_since(seq, T0)
    s.ingest([("a", T0 - 86400, 1.0)])  # older than the window: no change
    assert not s.written_since(seq, T0)
    s.ingest([("a", T0 + 600, 1.0)])  # inside the window
    assert s.written_since(seq, T0)


def test_timestamps_with_offsets_become_utc():
    assert to_seconds("2024-01-01T02:00+02:00") == T0
    assert from_seconds(T0) == pd.Timestamp("2024-01-01")


def test_sqlalchemy_url_backend(tmp_path):
    pytest.importorskip("sqlalchemy")
    s = Store(f"sqlite+pysqlite:///{tmp_path / 'b.db'}")
    s.ingest([("a", T0, 1.0), ("a", T0 + 300, 2.0)], [(T0, "w", 1.5)])
    s.ingest([("a", T0, 5.0)])
    assert s.count() == 2 and s.latest() == T0 + 300
    assert s.observations(["a"], None, T0) == [("a", T0, 5.0)]
    assert s.ping()


def test_bad_database_url_is_one_line():
    pytest.importorskip("sqlalchemy")
    from stmgt.errors import ConfigError

    with pytest.raises(ConfigError, match="--db 'nosuchdialect://x'"):
        Store("nosuchdialect://x")


def test_histogram_and_exposition_text():
    h = Histogram(buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 2.0):
        h.observe((("route", "/x"),), v)
    lines = h.lines("lat")
    assert 'lat_bucket{route="/x",le="0.1"} 1' in lines and 'lat_bucket{route="/x",le="+Inf"} 3' in lines
    assert 'lat_count{route="/x"} 3' in lines
    m = Metrics()
    m.request("/v1/forecast", "GET", 200, 0.01)
    text = m.render([("g", "gauge", "a gauge", {"model": 'a"b'}, 1.5)])
    assert 'stmgt_http_requests_total{route="/v1/forecast",method="GET",status="200"} 1' in text
    assert '# TYPE g gauge\ng{model="a\\"b"} 1.5' in text
