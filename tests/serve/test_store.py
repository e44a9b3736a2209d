"""The observation store on its own, on SQLite and on a real PostgreSQL server (``new_db``): upserts,
out-of-order rows, retention on the server's clock, flags, revisions, migration, the one-writer lock,
and damaged or unwritable stores refused at start."""

import os
import shutil
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from stmgt.errors import ConfigError
from stmgt.serve.metrics import Histogram, Metrics
from stmgt.serve.store import Store, StoreUnavailable, from_seconds, to_seconds

T0 = to_seconds("2024-01-01T00:00")
DAY = 86400


class Clock:
    """A server clock the test moves."""

    def __init__(self, t=1_900_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_upsert_is_idempotent_and_replaces(new_db):
    s = Store(new_db())
    rows = [("a", T0 + 300 * i, float(i)) for i in range(10)]
    s.ingest(rows)
    s.ingest(rows)
    assert s.count() == 10
    s.ingest([("a", T0, 99.0)])
    assert s.count() == 10
    assert s.observations(["a"], T0, T0)[0] == ("a", T0, 99.0, 0)
    if new_db.backend == "sqlite":
        assert s.backend.query("PRAGMA journal_mode")[0][0] == "wal"


def test_out_of_order_rows_are_kept_in_time_order(new_db):
    s = Store(new_db())
    s.ingest([("a", T0 + 600, 3.0)])
    s.ingest([("a", T0, 1.0), ("b", T0 + 300, 2.0)])
    assert [r[1] for r in s.observations(None, None, None)] == [T0, T0 + 300, T0 + 600]
    assert s.latest() == T0 + 600 and s.earliest() == T0
    assert s.latest(["b"]) == T0 + 300


def test_store_reopens_with_its_rows(new_db):
    db = new_db()
    first = Store(db)
    first.ingest([("a", T0, 1.0)], [(T0, "temperature", 3.0)])
    first.close()
    s = Store(f"sqlite:///{db}" if new_db.backend == "sqlite" else db)
    assert s.count() == 1 and s.latest() == T0
    df = s.window_frame(["a"], T0, T0 + 300, ["temperature"])
    assert list(df.columns) == ["timestamp", "node_id", "value", "temperature"]
    assert df["timestamp"].iloc[0] == pd.Timestamp("2024-01-01") and df["temperature"].iloc[0] == 3.0


def test_retention_is_on_the_servers_clock_not_the_datas(new_db):
    """The attack of issue 21: a store of 2024 rows, then rows stamped far ahead and far back. Nothing
    acknowledged less than the retention ago is deleted; what was acknowledged earlier is."""
    clock = Clock()
    s = Store(new_db(), retention_days=1, clock=clock)
    history = [(f"n{i}", T0 + 300 * k, 50.0) for i in range(4) for k in range(100)]
    s.ingest(history)  # a replayed historical city
    s.ingest([("n0", to_seconds("2099-01-01"), 1.0)])  # a client's wrong clock, far ahead of the data
    s.ingest([("n1", to_seconds("1970-01-02"), 1.0)])  # and far behind it
    assert s.prune() == 0 and s.count() == 402
    clock.t += 0.75 * DAY
    s.ingest([("n2", T0, 7.0)])  # re-sent: acknowledged again, so young again
    s.ingest([("n3", T0 + 300 * 100, 8.0)])
    assert s.prune() == 0 and s.count() == 403
    clock.t += 0.5 * DAY  # the first batches are 1.25 days old now; the last two 0.5 day
    assert s.prune() == 401
    assert sorted(r[:3] for r in s.observations(None, None, None)) == [("n2", T0, 7.0), ("n3", T0 + 30000, 8.0)]
    assert s.latest() == T0 + 30000


def test_issued_forecasts_follow_the_same_retention(new_db):
    clock = Clock()
    s = Store(new_db(), retention_days=1, clock=clock)
    table = pd.DataFrame({"step": [1], "node_id": ["a"], "timestamp": [pd.Timestamp("2024-01-01 00:05")],
                          "mean": [1.0], "q05": [0.5], "q10": [0.6], "q50": [1.0], "q90": [1.4], "q95": [1.5]})
    s.save_forecast("m", "v", T0, table, 1.0)
    clock.t += 0.9 * DAY
    s.save_forecast("m", "v", T0 + 300, table, 1.0)
    s.prune()
    assert s.forecasts_issued("m", "v") == 2
    clock.t += 0.2 * DAY
    s.prune()
    assert s.forecasts_issued("m", "v") == 1
    assert s.backend.query("SELECT issued_at, COUNT(*) FROM forecast_value GROUP BY issued_at") == [(T0 + 300, 1)]


def test_flagged_rows_are_kept_but_missing_for_forecasts(new_db):
    s = Store(new_db())
    s.ingest([("a", T0, 50.0), ("b", T0, 1e30, 1), ("a", T0 + 300, 51.0), ("b", T0 + 600, 1e308, 1)],
             [(T0, "w", 1.0), (T0 + 300, "w", 1e30, 1)])
    assert s.count() == 4 and s.count_flagged() == 2 and s.rows_flagged == 2
    assert s.latest() == T0 + 300 and s.latest(["b"]) is None  # a flagged reading is no observation
    df = s.window_frame(["a", "b"], T0, T0 + 900, ["w"])
    assert df["node_id"].tolist() == ["a", "a"] and df["w"].isna().tolist() == [False, True]
    assert s.last_observed(["a", "b"], T0, T0 + 900) == {"a": T0 + 300}
    assert s.flagged_in(["a", "b"], T0, T0 + 900) == {"b": 2}
    assert [r[3] for r in s.observations(["b"], None, None)] == [1, 1]
    s.ingest([("b", T0, 49.0)])  # a good reading replaces the flagged one
    assert s.latest(["b"]) == T0 and s.count_flagged() == 1


def test_written_since_tells_caches_about_late_rows(new_db):
    s = Store(new_db())
    s.ingest([("a", T0 + 3000, 1.0)])
    seq = s.seq
    assert not s.written_since(seq, T0)
    s.ingest([("a", T0 - 86400, 1.0)])  # older than the window: no change
    assert not s.written_since(seq, T0)
    s.ingest([("a", T0 + 600, 1.0)])  # inside the window
    assert s.written_since(seq, T0)


OLD_SCHEMA = [  # the tables of the first release: no flag, no ingested_at
    "CREATE TABLE obs (node TEXT NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY (node, ts))",
    "CREATE TABLE cov (ts INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (ts, name))",
    "INSERT INTO obs VALUES ('a', 1704067200, 1.5)", "INSERT INTO obs VALUES ('a', 1704067500, 2.5)",
    "INSERT INTO cov VALUES (1704067200, 'w', 3.0)",
]


def test_a_store_of_the_first_release_is_migrated_and_keeps_its_rows(new_db):
    sa = pytest.importorskip("sqlalchemy")
    db = new_db()
    engine = sa.create_engine(f"sqlite:///{db}" if new_db.backend == "sqlite" else db)
    with engine.begin() as c:
        for sql in OLD_SCHEMA:
            c.exec_driver_sql(sql)
    engine.dispose()
    clock = Clock()
    s = Store(db, retention_days=1, clock=clock)
    assert {"flag", "ingested_at"} <= s.backend.columns("obs") and {"flag", "ingested_at"} <= s.backend.columns("cov")
    assert s.backend.query("SELECT ts, flag, ingested_at FROM obs ORDER BY ts") == [
        (T0, 0, int(clock.t)), (T0 + 300, 0, int(clock.t))]  # acknowledged, as far as retention goes, now
    assert s.prune() == 0 and s.count() == 2 and s.latest() == T0 + 300
    s.ingest([("a", T0 + 600, 1.0)], [(T0 + 600, "w", 1.0)])
    assert s.count() == 3
    s.close()
    assert Store(db).count() == 3  # a second opening has nothing to migrate


def test_one_store_has_one_writer(new_db):
    db = new_db()
    first = Store(db, exclusive=True)
    with pytest.raises(ConfigError, match="the store is in use by another `stmgt serve`"):
        Store(db, exclusive=True)
    first.close()
    Store(db, exclusive=True).close()  # released: the next one starts


def test_the_lock_names_the_holder_and_dies_with_it(tmp_path):
    db = str(tmp_path / "a.db")
    code = f"import time; from stmgt.serve.store import Store; s = Store({db!r}, exclusive=True); print('held'," \
           " flush=True); time.sleep(60)"
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "..", "src")}
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"in use by another `stmgt serve` \(pid {p.pid}, lock .*a\.db\.lock\)"):
            Store(db, exclusive=True)
    finally:
        p.kill()
        p.wait()
    Store(db, exclusive=True).close()  # the kernel released the lock of the killed process


def test_damaged_files_and_folders_are_refused_at_start_with_the_fix(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(ConfigError, match=r"garbage\.db: not a SQLite database, or a damaged one \(file is not a"
                                          r" database\); move the file away"):
        Store(garbage)
    good = tmp_path / "trunc.db"
    s = Store(good)
    s.ingest([(f"n{i}", T0 + 300 * k, 1.0) for i in range(50) for k in range(200)])
    s.close()
    sqlite3.connect(good).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    for extra in ("-wal", "-shm"):
        (tmp_path / f"trunc.db{extra}").unlink(missing_ok=True)
    os.truncate(good, good.stat().st_size // 2)
    with pytest.raises(ConfigError, match=r"trunc\.db: not a SQLite database, or a damaged one \(database disk"
                                          r" image is malformed\)"):
        Store(good)
    with pytest.raises(ConfigError, match=r"is a folder; give the path of a SQLite file inside it"):
        Store(tmp_path)


READ_ONLY = """
import os, sys
from stmgt.errors import ConfigError
from stmgt.serve.store import Store
if os.geteuid() == 0:  # root ignores permissions: drop to nobody once everything is imported
    os.setgid(65534)
    os.setuid(65534)
try:
    Store(sys.argv[1], exclusive=sys.argv[2] == "1")
except ConfigError as e:
    print(e)
else:
    print("opened")
"""


def _as_unprivileged(args, tmp):
    """Run READ_ONLY as an ordinary user (as root, permissions do not apply: it becomes ``nobody``)."""
    src = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "src"))
    cmd = [sys.executable, "-c", READ_ONLY, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp,
                       env={**os.environ, "PYTHONPATH": src, "HOME": tmp})
    return (p.stdout + p.stderr).strip()


def test_read_only_store_file_or_folder_is_refused_at_start(tmp_path):
    import tempfile

    top = tempfile.mkdtemp(prefix="stmgt-ro-")  # outside pytest's 0700 folder, so that `nobody` may enter it
    try:
        os.chmod(top, 0o755)
        ro_file = os.path.join(top, "w")
        os.mkdir(ro_file)
        Store(os.path.join(ro_file, "s.db")).close()
        for f in os.listdir(ro_file):
            os.chmod(os.path.join(ro_file, f), 0o444)
        os.chmod(ro_file, 0o777)  # a writable folder, a read-only file
        out = _as_unprivileged([os.path.join(ro_file, "s.db"), "0"], top)
        assert "s.db: cannot write the store (attempt to write a readonly database); this user needs write" in out
        assert "fix the permissions, or give another --db" in out and "Traceback" not in out
        ro_dir = os.path.join(top, "r")
        os.mkdir(ro_dir)
        Store(os.path.join(ro_dir, "s.db")).close()
        os.chmod(ro_dir, 0o555)  # a read-only folder
        out = _as_unprivileged([os.path.join(ro_dir, "s.db"), "1"], top)
        assert "s.db: cannot create the lock file" in out and "Traceback" not in out
        out = _as_unprivileged([os.path.join(ro_dir, "s.db"), "0"], top)
        assert "s.db: cannot write the store (" in out and "Traceback" not in out
        out = _as_unprivileged([os.path.join(ro_dir, "new", "s.db"), "0"], top)
        assert "cannot create its folder" in out and "Traceback" not in out
    finally:
        for root, dirs, _ in os.walk(top):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        shutil.rmtree(top, ignore_errors=True)


def test_a_failing_write_while_serving_is_a_store_error(tmp_path):
    s = Store(tmp_path / "a.db")

    def fail(statements):
        raise sqlite3.OperationalError("disk I/O error")

    s.backend.write = fail
    with pytest.raises(StoreUnavailable, match=r"cannot write \(disk I/O error\); nothing of this request was kept"):
        s.ingest([("a", T0, 1.0)])


def test_timestamps_with_offsets_become_utc():
    assert to_seconds("2024-01-01T02:00+02:00") == T0
    assert from_seconds(T0) == pd.Timestamp("2024-01-01")


def test_sqlalchemy_url_backend(tmp_path):
    pytest.importorskip("sqlalchemy")
    s = Store(f"sqlite+pysqlite:///{tmp_path / 'b.db'}")
    s.ingest([("a", T0, 1.0), ("a", T0 + 300, 2.0)], [(T0, "w", 1.5)])
    s.ingest([("a", T0, 5.0)])
    assert s.count() == 2 and s.latest() == T0 + 300
    assert s.observations(["a"], None, T0) == [("a", T0, 5.0, 0)]
    assert s.ping()


def test_bad_database_url_is_one_line():
    pytest.importorskip("sqlalchemy")
    with pytest.raises(ConfigError, match="--db 'nosuchdialect://x'"):
        Store("nosuchdialect://x")


def test_a_missing_driver_names_the_extra_and_hides_the_password(monkeypatch):
    pytest.importorskip("sqlalchemy")
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` fails as where it is not installed
    with pytest.raises(ConfigError) as e:
        Store("postgresql+psycopg://city:s3cret@db.example/traffic")
    msg = str(e.value)
    assert "the database driver psycopg is not installed; pip install 'stmgt[serve]'" in msg
    assert "s3cret" not in msg and "\n" not in msg


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
