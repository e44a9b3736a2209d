"""The observation store of ``stmgt serve``: observations, covariates and issued forecasts.

One store serves every model of a service. Observations are keyed by ``(node_id, timestamp)``
alone, so the served models must share one node set (``stmgt serve`` refuses runs whose node
sets differ; serve another city from another process with its own ``--db``).

Timestamps are kept as integer seconds on the data's own clock (naive timestamps as sent;
timestamps with a UTC offset are converted to UTC first). Re-sending a ``(node, timestamp)``
replaces its value (an idempotent upsert); late and out-of-order rows are welcome.

Backends:

* a file path or ``sqlite:///PATH`` (default): Python's ``sqlite3`` in WAL mode with
  ``synchronous=FULL`` (a batch is on disk before it is acknowledged) and ``executemany``;
* any other SQLAlchemy URL (e.g. ``postgresql+psycopg://...``, or ``sqlite+pysqlite:///PATH``
  to force it): SQLAlchemy Core with the same SQL (``INSERT ... ON CONFLICT DO UPDATE``).

Retention is on the data clock: rows older than ``retention_days`` before the newest observation
are deleted (at most once a minute, after an ingest).
"""

from __future__ import annotations

import collections
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.errors import ConfigError

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS obs (node TEXT NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,"
    " PRIMARY KEY (node, ts))",
    "CREATE INDEX IF NOT EXISTS obs_ts ON obs (ts)",
    "CREATE TABLE IF NOT EXISTS cov (ts INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,"
    " PRIMARY KEY (ts, name))",
    "CREATE TABLE IF NOT EXISTS forecast (model TEXT NOT NULL, version TEXT NOT NULL, issued_at INTEGER NOT NULL,"
    " created REAL NOT NULL, compute_ms REAL NOT NULL, PRIMARY KEY (model, version, issued_at))",
    "CREATE TABLE IF NOT EXISTS forecast_value (model TEXT NOT NULL, version TEXT NOT NULL,"
    " issued_at INTEGER NOT NULL, step INTEGER NOT NULL, node TEXT NOT NULL, target INTEGER NOT NULL,"
    " mean REAL, q05 REAL, q10 REAL, q50 REAL, q90 REAL, q95 REAL,"
    " PRIMARY KEY (model, version, issued_at, step, node))",
    "CREATE INDEX IF NOT EXISTS forecast_value_target ON forecast_value (model, target)",
]
UPSERT_OBS = ("INSERT INTO obs (node, ts, value) VALUES (?, ?, ?)"
              " ON CONFLICT (node, ts) DO UPDATE SET value = excluded.value")
UPSERT_COV = ("INSERT INTO cov (ts, name, value) VALUES (?, ?, ?)"
              " ON CONFLICT (ts, name) DO UPDATE SET value = excluded.value")
#: Quantile columns stored with every issued forecast (the 80% and 90% central intervals and the median).
STORED_QUANTILES = (0.05, 0.1, 0.5, 0.9, 0.95)


def to_seconds(ts) -> int:
    """A timestamp (datetime, numpy or pandas) as integer seconds since 1970 on its own clock."""
    t = pd.Timestamp(ts)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return int(t.value // 1_000_000_000)


def from_seconds(s: int) -> pd.Timestamp:
    """Inverse of :func:`to_seconds` (a naive timestamp)."""
    return pd.Timestamp(int(s), unit="s")


class _SqliteBackend:
    """``sqlite3`` with one connection per thread; writes are serialised by a lock."""

    def __init__(self, path: str):
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        con = self.con()
        con.execute("PRAGMA journal_mode=WAL")
        for s in SCHEMA:
            con.execute(s)
        con.commit()

    def con(self) -> sqlite3.Connection:
        c = getattr(self._local, "con", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA synchronous=FULL")
            c.execute("PRAGMA busy_timeout=30000")
            self._local.con = c
        return c

    def write(self, statements: list[tuple[str, list]]) -> None:
        c = self.con()
        c.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in statements:
                if rows:
                    c.executemany(sql, rows)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def query(self, sql: str, params=()) -> list[tuple]:
        return self.con().execute(sql, params).fetchall()

    def size_bytes(self) -> int:
        if self.path == ":memory:":
            return 0
        return sum(p.stat().st_size for p in (Path(self.path), Path(self.path + "-wal")) if p.exists())


class _SqlAlchemyBackend:
    """SQLAlchemy Core for any other database URL (the same SQL, ``?`` turned into named parameters)."""

    def __init__(self, url: str):
        try:
            import sqlalchemy as sa
        except ImportError:
            raise ConfigError(f"--db {url!r} is a SQLAlchemy URL; install sqlalchemy (pip install 'stmgt[serve]')"
                              ) from None
        self.sa = sa
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
            with self.engine.begin() as c:
                if self.engine.dialect.name == "sqlite":
                    c.exec_driver_sql("PRAGMA journal_mode=WAL")
                for s in SCHEMA:
                    c.exec_driver_sql(s.replace("REAL", "DOUBLE PRECISION")
                                      if self.engine.dialect.name == "postgresql" else s)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, sa.exc.OperationalError) as e:
            raise ConfigError(f"--db {url!r}: cannot open the database ({str(e).splitlines()[0]})") from None

    @staticmethod
    def _named(sql: str) -> str:
        parts = sql.split("?")
        return "".join(p + (f":p{i}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))

    def write(self, statements: list[tuple[str, list]]) -> None:
        with self.engine.begin() as c:
            for sql, rows in statements:
                if rows:
                    c.execute(self.sa.text(self._named(sql)),
                              [{f"p{i}": v for i, v in enumerate(r)} for r in rows])

    def query(self, sql: str, params=()) -> list[tuple]:
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(self.sa.text(self._named(sql)),
                                                {f"p{i}": v for i, v in enumerate(params)})]

    def size_bytes(self) -> int:
        return 0


def open_backend(db: str):
    """A path (or ``sqlite:///PATH``) -> sqlite3 backend; any other URL -> SQLAlchemy backend."""
    if db.startswith("sqlite:///"):
        return _SqliteBackend(db[len("sqlite:///"):] or ":memory:")
    if "://" in db:
        return _SqlAlchemyBackend(db)
    return _SqliteBackend(db)


class Store:
    """Observations, covariates and issued forecasts of one service (see the module docstring).

    Args:
        db: a file path, ``sqlite:///PATH`` or a SQLAlchemy URL.
        retention_days: keep observations and forecasts this many days before the newest observation.
    """

    def __init__(self, db: str | Path, retention_days: float = 7.0):
        self.db = str(db)
        self.backend = open_backend(self.db)
        self.retention_s = int(retention_days * 86400)
        self._lock = threading.Lock()  # serialises writes
        self._meta = threading.Lock()  # guards the revision counters below
        self._seq = 0
        self.forecast_seq = 0
        self._writes: collections.deque = collections.deque(maxlen=4096)  # (seq, max_ts) of recent ingests
        self._last_prune = 0.0
        self.rows_ingested = 0
        row = self.backend.query("SELECT MAX(ts) FROM obs")[0]
        self._latest = None if row[0] is None else int(row[0])

    # ------------------------------------------------------------------ writing
    def ingest(self, rows: list[tuple[str, int, float]], covs: list[tuple[int, str, float]] = ()) -> int:
        """Upsert ``(node, ts, value)`` rows and ``(ts, name, value)`` covariates in one transaction."""
        if not rows and not covs:
            return 0
        with self._lock:
            self.backend.write([(UPSERT_OBS, rows), (UPSERT_COV, list(covs))])
            hi = max([r[1] for r in rows] + [c[0] for c in covs])
            with self._meta:
                self._latest = hi if self._latest is None else max(self._latest, hi)
                self._seq += 1
                self._writes.append((self._seq, hi))
                self.rows_ingested += len(rows)
        if time.monotonic() - self._last_prune > 60:
            self.prune()
        return len(rows)

    def prune(self) -> int:
        """Delete rows older than the retention before the newest observation; the number deleted."""
        self._last_prune = time.monotonic()
        if self._latest is None or self.retention_s <= 0:
            return 0
        cut = self._latest - self.retention_s
        with self._lock:
            n = self.backend.query("SELECT COUNT(*) FROM obs WHERE ts < ?", (cut,))[0][0]
            self.backend.write([("DELETE FROM obs WHERE ts < ?", [(cut,)]),
                                ("DELETE FROM cov WHERE ts < ?", [(cut,)]),
                                ("DELETE FROM forecast_value WHERE issued_at < ?", [(cut,)]),
                                ("DELETE FROM forecast WHERE issued_at < ?", [(cut,)])])
        return int(n)

    @property
    def seq(self) -> int:
        """The number of ingests so far (a revision for caches)."""
        return self._seq

    def written_since(self, seq: int, since_ts: int) -> bool:
        """Whether an ingest after revision ``seq`` wrote a row at or after ``since_ts``."""
        with self._meta:
            if seq == self._seq:
                return False
            writes = list(self._writes)
        if not writes or writes[0][0] > seq + 1:
            return True  # too old to tell
        return any(s > seq and hi >= since_ts for s, hi in writes)

    def save_forecast(self, model: str, version: str, issued_at: int, table: pd.DataFrame,
                      compute_ms: float) -> None:
        """Store an issued forecast (replacing one issued earlier for the same model, version and window end)."""
        from stmgt.predict import quantile_column

        cols = ["mean"] + [quantile_column(q) for q in STORED_QUANTILES]
        target = (table["timestamp"].to_numpy().astype("datetime64[s]").astype(np.int64)).tolist()
        vals = table[cols].to_numpy(np.float64).tolist()
        rows = [(model, version, issued_at, int(s), str(n), t, *v)
                for s, n, t, v in zip(table["step"].tolist(), table["node_id"].tolist(), target, vals)]
        with self._lock:
            self.backend.write([
                ("DELETE FROM forecast_value WHERE model = ? AND version = ? AND issued_at = ?",
                 [(model, version, issued_at)]),
                ("INSERT INTO forecast_value VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows),
                ("INSERT INTO forecast (model, version, issued_at, created, compute_ms) VALUES (?, ?, ?, ?, ?)"
                 " ON CONFLICT (model, version, issued_at) DO UPDATE SET created = excluded.created,"
                 " compute_ms = excluded.compute_ms", [(model, version, issued_at, time.time(), compute_ms)]),
            ])
            with self._meta:
                self.forecast_seq += 1

    # ------------------------------------------------------------------ reading
    def latest(self, nodes: list[str] | None = None) -> int | None:
        """The newest observation time (seconds), over ``nodes`` or all nodes."""
        if nodes is None:
            return self._latest
        return self._one(f"SELECT MAX(ts) FROM obs WHERE node IN ({_marks(nodes)})", tuple(nodes))

    def earliest(self) -> int | None:
        """The oldest observation time (seconds) still kept."""
        return self._one("SELECT MIN(ts) FROM obs")

    def _one(self, sql, params=()):
        v = self.backend.query(sql, params)[0][0]
        return None if v is None else int(v)

    def count(self) -> int:
        """Observations kept."""
        return int(self.backend.query("SELECT COUNT(*) FROM obs")[0][0])

    def size_bytes(self) -> int:
        """Bytes on disk (SQLite file and WAL; 0 for other databases)."""
        return self.backend.size_bytes()

    def ping(self) -> bool:
        """Whether the database answers a query."""
        try:
            self.backend.query("SELECT 1")
            return True
        except Exception:
            return False

    def observations(self, nodes: list[str] | None, since: int | None, until: int | None,
                     limit: int = 100_000) -> list[tuple[str, int, float]]:
        """``(node, ts, value)`` rows in ``[since, until]`` ordered by time, at most ``limit``."""
        where, params = ["1 = 1"], []
        if nodes:
            where.append(f"node IN ({_marks(nodes)})")
            params += list(nodes)
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if until is not None:
            where.append("ts <= ?")
            params.append(until)
        sql = f"SELECT node, ts, value FROM obs WHERE {' AND '.join(where)} ORDER BY ts, node LIMIT ?"
        return self.backend.query(sql, tuple(params) + (limit,))

    def window_frame(self, nodes: list[str], lo: int, hi: int, covariates: list[str]) -> pd.DataFrame:
        """Long-format observations with ``lo <= ts < hi`` (and covariate columns by time), as a table."""
        rows = self.backend.query(f"SELECT ts, node, value FROM obs WHERE ts >= ? AND ts < ? AND node IN"
                                  f" ({_marks(nodes)})", (lo, hi, *nodes))
        df = pd.DataFrame(rows, columns=["ts", "node_id", "value"])
        if covariates:
            crow = self.backend.query(f"SELECT ts, name, value FROM cov WHERE ts >= ? AND ts < ? AND name IN"
                                      f" ({_marks(covariates)})", (lo, hi, *covariates))
            c = pd.DataFrame(crow, columns=["ts", "name", "value"]).pivot_table(index="ts", columns="name",
                                                                                  values="value")
            c = c.reindex(columns=covariates)
            df = df.merge(c, left_on="ts", right_index=True, how="left")
        df.insert(0, "timestamp", pd.to_datetime(df.pop("ts").astype("int64"), unit="s"))
        return df

    def scores(self, model: str, version: str, interval_s: int, lo: int, hi: int) -> list[tuple]:
        """Per horizon step over forecasts whose target time is in ``[lo, hi]``: ``(step, n, mae, cov80, cov90)``.

        An observation scores the forecast for its interval's bin (the mean of the readings in
        ``[target, target + interval)``), as the window builder floors timestamps.
        """
        sql = ("WITH o AS (SELECT node, (ts / ?) * ? AS bin, AVG(value) AS v FROM obs WHERE ts >= ? AND ts < ?"
               " GROUP BY node, bin)"
               " SELECT f.step, COUNT(*), AVG(ABS(o.v - f.q50)),"
               " AVG(CASE WHEN o.v >= f.q10 AND o.v <= f.q90 THEN 1.0 ELSE 0.0 END),"
               " AVG(CASE WHEN o.v >= f.q05 AND o.v <= f.q95 THEN 1.0 ELSE 0.0 END)"
               " FROM forecast_value f JOIN o ON o.node = f.node AND o.bin = f.target"
               " WHERE f.model = ? AND f.version = ? AND f.target >= ? AND f.target <= ?"
               " GROUP BY f.step ORDER BY f.step")
        return self.backend.query(sql, (interval_s, interval_s, lo, hi + interval_s, model, version, lo, hi))

    def forecasts_issued(self, model: str, version: str) -> int:
        """How many forecasts of this model version are kept."""
        return int(self.backend.query("SELECT COUNT(*) FROM forecast WHERE model = ? AND version = ?",
                                      (model, version))[0][0])


def _marks(items) -> str:
    return ", ".join("?" * len(items))
