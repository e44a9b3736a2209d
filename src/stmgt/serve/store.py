"""The observation store of ``stmgt serve``: observations, covariates and issued forecasts.

One store serves every model of a service. Observations are keyed by ``(node_id, timestamp)``
alone, so the served models must share one node set (``stmgt serve`` refuses runs whose node
sets differ; serve another city from another process with its own ``--db``).

Timestamps are kept as integer seconds since 1970 in UTC: a naive timestamp is read as UTC, one
with an offset is converted to UTC first; every answer writes them with :func:`iso_utc`
(``2024-01-03T08:00:00Z``). Re-sending a ``(node, timestamp)`` replaces its value (an idempotent
upsert); late and out-of-order rows are welcome.

Backends:

* a file path or ``sqlite:///PATH`` (default): Python's ``sqlite3`` in WAL mode with
  ``synchronous=FULL`` (a batch is on disk before it is acknowledged) and ``executemany``;
* any other SQLAlchemy URL (e.g. ``postgresql+psycopg://...``, or ``sqlite+pysqlite:///PATH``
  to force it): SQLAlchemy Core with the same SQL (``INSERT ... ON CONFLICT DO UPDATE``).

Every row carries ``ingested_at``, the server's wall clock (integer seconds) when it was last
acknowledged, and ``flag`` (1: outside its road's plausible range, kept but treated as missing).
Retention is on the server's clock, never on the data's: rows acknowledged more than
``retention_days`` ago are deleted (at most once a minute, after an ingest), so no timestamp a
client sends can delete another row, and a replayed historical city stays for the retention
window after its replay. Stores written by earlier versions gain the two columns when opened
(their rows count as acknowledged at that moment).

One store has one writer: :class:`Store` with ``exclusive=True`` (what ``stmgt serve`` uses)
holds a lock for its lifetime (``PATH.lock`` beside a SQLite file, a PostgreSQL advisory lock on
a server); a second service on the same store is refused at start.
"""

from __future__ import annotations

import collections
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.errors import ConfigError, StmgtError

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS obs (node TEXT NOT NULL, ts BIGINT NOT NULL, value REAL NOT NULL,"
    " flag INTEGER NOT NULL DEFAULT 0, ingested_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (node, ts))",
    "CREATE INDEX IF NOT EXISTS obs_ts ON obs (ts)",
    "CREATE TABLE IF NOT EXISTS cov (ts BIGINT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,"
    " flag INTEGER NOT NULL DEFAULT 0, ingested_at BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (ts, name))",
    "CREATE TABLE IF NOT EXISTS forecast (model TEXT NOT NULL, version TEXT NOT NULL, issued_at BIGINT NOT NULL,"
    " created REAL NOT NULL, compute_ms REAL NOT NULL, PRIMARY KEY (model, version, issued_at))",
    "CREATE TABLE IF NOT EXISTS forecast_value (model TEXT NOT NULL, version TEXT NOT NULL,"
    " issued_at BIGINT NOT NULL, step INTEGER NOT NULL, node TEXT NOT NULL, target BIGINT NOT NULL,"
    " mean REAL, q05 REAL, q10 REAL, q50 REAL, q90 REAL, q95 REAL,"
    " PRIMARY KEY (model, version, issued_at, step, node))",
    "CREATE INDEX IF NOT EXISTS forecast_value_target ON forecast_value (model, target)",
]
#: Columns added since the first release: ``(table, column, declaration)``; added to older stores when opened
#: (``ingested_at`` of their rows: the time of the migration, so that none is pruned earlier than it would be).
ADDED_COLUMNS = [("obs", "flag", "INTEGER NOT NULL DEFAULT 0"), ("obs", "ingested_at", "BIGINT NOT NULL DEFAULT {now}"),
                 ("cov", "flag", "INTEGER NOT NULL DEFAULT 0"), ("cov", "ingested_at", "BIGINT NOT NULL DEFAULT {now}")]
#: Created after the migration (an older store has no ``ingested_at`` to index before it).
INDEXES = ["CREATE INDEX IF NOT EXISTS obs_ingested ON obs (ingested_at)",
           "CREATE INDEX IF NOT EXISTS cov_ingested ON cov (ingested_at)"]
UPSERT_OBS = ("INSERT INTO obs (node, ts, value, flag, ingested_at) VALUES (?, ?, ?, ?, ?)"
              " ON CONFLICT (node, ts) DO UPDATE SET value = excluded.value, flag = excluded.flag,"
              " ingested_at = excluded.ingested_at")
UPSERT_COV = ("INSERT INTO cov (ts, name, value, flag, ingested_at) VALUES (?, ?, ?, ?, ?)"
              " ON CONFLICT (ts, name) DO UPDATE SET value = excluded.value, flag = excluded.flag,"
              " ingested_at = excluded.ingested_at")
#: Quantile columns stored with every issued forecast (the 80% and 90% central intervals and the median).
STORED_QUANTILES = (0.05, 0.1, 0.5, 0.9, 0.95)
_EPOCH = datetime(1970, 1, 1)


def to_seconds(ts) -> int:
    """A timestamp (datetime, numpy or pandas) as integer seconds since 1970 on its own clock."""
    t = pd.Timestamp(ts)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return int(t.value // 1_000_000_000)


def from_seconds(s: int) -> pd.Timestamp:
    """Inverse of :func:`to_seconds` (a naive timestamp)."""
    return pd.Timestamp(int(s), unit="s")


def iso_utc(t) -> str:
    """A time as every answer of the HTTP API writes it: ISO 8601 in UTC, whole seconds, a ``Z`` suffix
    (``2024-01-03T08:00:00Z``).

    ``t``: integer seconds since 1970 (the store's clock, which is UTC), or a datetime, numpy or pandas
    timestamp (naive: read as UTC; with an offset: converted to UTC). A fraction of a second is dropped.
    Seconds cover any year 1..9999 (pandas' timestamps stop in 2262).
    """
    if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool):
        dt = _EPOCH + timedelta(seconds=int(t // 1))  # floored: 0.9 s past a second is that second
    elif isinstance(t, datetime):
        dt = t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo is not None else t
    else:
        ts = pd.Timestamp(t)
        if ts.tzinfo is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        dt = ts.floor("s").to_pydatetime()
    return dt.replace(microsecond=0).isoformat() + "Z"


class StoreUnavailable(StmgtError):
    """The store refused a read or a write while serving (disk full, permissions changed, server gone): HTTP 503."""


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _hide_password(url: str) -> str:
    """``url`` with its password masked (error messages and logs must not show it)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@", 1)[-1] if "@" in url else url


def _sqlite_refusal(path: str, e: BaseException) -> ConfigError:
    """A one-line refusal, with the fix, of a SQLite store that cannot be opened or written."""
    msg = _first_line(e)
    low = msg.lower()
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return ConfigError(f"--db {path}: not a SQLite database, or a damaged one ({msg}); move the file away (keep"
                           f" it: `sqlite3 {path} .recover` may save its rows) and start again, or give another --db")
    if "locked" in low or "busy" in low:
        return ConfigError(f"--db {path}: the database is locked by another process ({msg}); stop the other"
                           " process or give another --db")
    folder = Path(path).resolve().parent
    return ConfigError(f"--db {path}: cannot write the store ({msg}); this user needs write access to the file and"
                       f" to its folder {folder} (SQLite writes {Path(path).name}-wal and -shm beside it): fix the"
                       " permissions, or give another --db")


class _FileLock:
    """An exclusive ``flock`` on ``PATH.lock`` for the life of the process (released by the kernel even on SIGKILL)."""

    def __init__(self, db_path: str):
        self.path = Path(db_path + ".lock")
        self._f = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (docs/serving.md says so)
            return
        try:
            f = open(self.path, "a+")
        except OSError as e:
            raise ConfigError(f"--db {db_path}: cannot create the lock file {self.path} ({e.strerror}); this user"
                              " needs write access to the store's folder") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            pid = f.read().strip()[:20]
            f.close()
            raise ConfigError(f"--db {db_path}: the store is in use by another `stmgt serve` (pid {pid or '?'}, lock"
                              f" {self.path}); one process writes a store: stop the other one, or give this one"
                              " another --db") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._f = f

    def release(self) -> None:
        if self._f is not None:
            self._f.close()  # closing the descriptor releases the flock
            self._f = None


class _SqliteBackend:
    """``sqlite3`` with one connection per thread; writes are serialised by a lock."""

    dialect = "sqlite"

    def __init__(self, path: str, exclusive: bool = False, now: int = 0):
        self.path = path
        self.lock = None
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        if path != ":memory:":
            p = Path(path)
            if p.is_dir():
                raise ConfigError(f"--db {path}: is a folder; give the path of a SQLite file inside it (e.g."
                                  f" {p / 'stmgt-serve.db'}) or a database URL")
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"--db {path}: cannot create its folder {p.parent} ({e.strerror}); create it or"
                                  " give another --db") from None
            if exclusive:
                self.lock = _FileLock(path)
        try:
            con = self.con()
            con.execute("PRAGMA journal_mode=WAL")
            for s in SCHEMA:
                con.execute(s)
            _migrate(self, now)
            for s in INDEXES:
                con.execute(s)
            # a write probe: a read-only file or folder is refused now, not with the first batch
            con.execute("BEGIN IMMEDIATE")
            con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            con.execute("INSERT INTO meta (key, value) VALUES ('opened_at', ?) ON CONFLICT (key) DO UPDATE SET"
                        " value = excluded.value", (str(now),))
            con.execute("COMMIT")
            con.execute("SELECT COUNT(*), MAX(ts) FROM obs").fetchall()  # reads the table (a damaged file fails)
        except sqlite3.DatabaseError as e:
            self.close()
            raise _sqlite_refusal(path, e) from None

    def con(self) -> sqlite3.Connection:
        c = getattr(self._local, "con", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA synchronous=FULL")
            c.execute("PRAGMA busy_timeout=30000")
            self._local.con = c
            self._all.append(c)
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
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    def query(self, sql: str, params=()) -> list[tuple]:
        return self.con().execute(sql, params).fetchall()

    def columns(self, table: str) -> set[str]:
        return {r[1] for r in self.query(f"PRAGMA table_info({table})")}

    def size_bytes(self) -> int:
        if self.path == ":memory:":
            return 0
        return sum(p.stat().st_size for p in (Path(self.path), Path(self.path + "-wal")) if p.exists())

    def close(self) -> None:
        for c in self._all:
            try:
                c.close()
            except Exception:
                pass
        self._all.clear()
        self._local = threading.local()
        if self.lock is not None:
            self.lock.release()


class _SqlAlchemyBackend:
    """SQLAlchemy Core for any other database URL (the same SQL, ``?`` turned into named parameters)."""

    def __init__(self, url: str, exclusive: bool = False, now: int = 0):
        shown = _hide_password(url)
        try:
            import sqlalchemy as sa
        except ImportError:
            raise ConfigError(f"--db {shown!r} is a SQLAlchemy URL; install sqlalchemy (pip install 'stmgt[serve]')"
                              ) from None
        self.sa = sa
        self.lock = None
        self._lock_con = None
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        except ImportError as e:
            raise ConfigError(f"--db {shown!r}: the database driver {e.name or ''} is not installed; pip install"
                              " 'stmgt[serve]' (it brings psycopg, for postgresql+psycopg:// URLs) or the driver"
                              " your URL names") from None
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as e:
            raise ConfigError(f"--db {shown!r}: cannot open the database ({_first_line(e)})") from None
        self.dialect = self.engine.dialect.name
        try:
            if exclusive and self.dialect == "sqlite" and self.engine.url.database not in (None, "", ":memory:"):
                self.lock = _FileLock(self.engine.url.database)
            with self.engine.begin() as c:
                if self.dialect == "sqlite":
                    c.exec_driver_sql("PRAGMA journal_mode=WAL")
                for s in SCHEMA:
                    c.exec_driver_sql(self._ddl(s))
            _migrate(self, now)
            with self.engine.begin() as c:
                for s in INDEXES:
                    c.exec_driver_sql(s)
            if exclusive and self.dialect == "postgresql":
                self._advisory_lock(shown)
        except sa.exc.SQLAlchemyError as e:
            self.close()
            raise ConfigError(f"--db {shown!r}: cannot open the database ({_first_line(e)})") from None
        except ConfigError:
            self.close()
            raise

    def _ddl(self, sql: str) -> str:
        return sql.replace("REAL", "DOUBLE PRECISION") if self.dialect == "postgresql" else sql

    def _advisory_lock(self, shown: str) -> None:
        """A session-level advisory lock on a connection held for the store's life (released when it closes)."""
        key = int.from_bytes(hashlib.sha256(b"stmgt serve").digest()[:8], "big", signed=True)
        self._lock_con = self.engine.connect()
        got = self._lock_con.exec_driver_sql(f"SELECT pg_try_advisory_lock({key})").scalar()
        self._lock_con.commit()
        if not got:
            self._lock_con.close()
            self._lock_con = None
            raise ConfigError(f"--db {shown!r}: the store is in use by another `stmgt serve` (it holds the"
                              " database's advisory lock); one process writes a store: stop the other one, or give"
                              " this one another database")

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

    def columns(self, table: str) -> set[str]:
        return {c["name"] for c in self.sa.inspect(self.engine).get_columns(table)}

    def size_bytes(self) -> int:
        if self.dialect == "postgresql":
            try:
                return int(self.query("SELECT pg_database_size(current_database())")[0][0])
            except Exception:
                return 0
        return 0

    def close(self) -> None:
        if self._lock_con is not None:
            try:
                self._lock_con.close()
            except Exception:
                pass
            self._lock_con = None
        if self.lock is not None:
            self.lock.release()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.dispose()


def _migrate(backend, now: int) -> None:
    """Add the columns of :data:`ADDED_COLUMNS` that an older store lacks."""
    for table in ("obs", "cov"):
        have = backend.columns(table)
        todo = [(c, d) for t, c, d in ADDED_COLUMNS if t == table and c not in have]
        if todo:
            backend.write([(f"ALTER TABLE {table} ADD COLUMN {c} {d.format(now=int(now))}", [()]) for c, d in todo])


def open_backend(db: str, exclusive: bool = False, now: int = 0):
    """A path (or ``sqlite:///PATH``) -> sqlite3 backend; any other URL -> SQLAlchemy backend."""
    if db.startswith("sqlite:///"):
        return _SqliteBackend(db[len("sqlite:///"):] or ":memory:", exclusive, now)
    if "://" in db:
        return _SqlAlchemyBackend(db, exclusive, now)
    return _SqliteBackend(db, exclusive, now)


def _row(r, now: int) -> tuple:
    """``(key, key, value[, flag])`` -> ``(key, key, value, flag, ingested_at)``."""
    return (r[0], r[1], float(r[2]), int(r[3]) if len(r) > 3 else 0, now)


class Store:
    """Observations, covariates and issued forecasts of one service (see the module docstring).

    Args:
        db: a file path, ``sqlite:///PATH`` or a SQLAlchemy URL.
        retention_days: keep observations and forecasts this many days after they were acknowledged
            (the server's clock; 0 keeps everything).
        exclusive: hold the store's lock (one writing process per store).
        clock: the server's wall clock in seconds (tests move it).
    """

    def __init__(self, db: str | Path, retention_days: float = 7.0, exclusive: bool = False,
                 clock: Callable[[], float] = time.time):
        self.db = str(db)
        self.clock = clock
        self.backend = open_backend(self.db, exclusive, int(clock()))
        self.retention_s = int(retention_days * 86400)
        self._lock = threading.Lock()  # serialises writes
        self._meta = threading.Lock()  # guards the revision counters below
        self._seq = 0
        self.forecast_seq = 0
        self._writes: collections.deque = collections.deque(maxlen=4096)  # (seq, max_ts) of recent ingests
        self._last_prune = 0.0
        self.rows_ingested = 0
        self.rows_flagged = 0
        self.rows_pruned = 0
        self._latest = self._one("SELECT MAX(ts) FROM obs WHERE flag = 0")
        self._node_latest = self._read_node_latest()  # node -> newest unflagged time, kept in memory

    def _read_node_latest(self, nodes: list[str] | None = None) -> dict[str, int]:
        """Per node (all, or ``nodes``), its newest unflagged observation time, from the database."""
        where = "" if nodes is None else f" AND node IN ({_marks(nodes)})"
        rows = self.backend.query(f"SELECT node, MAX(ts) FROM obs WHERE flag = 0{where} GROUP BY node",
                                  tuple(nodes or ()))
        return {str(n): int(t) for n, t in rows if t is not None}

    def close(self) -> None:
        """Close the connections and release the store's lock."""
        self.backend.close()

    def _write(self, statements) -> None:
        try:
            self.backend.write(statements)
        except Exception as e:
            if isinstance(e, (sqlite3.Error,)) or type(e).__module__.startswith("sqlalchemy"):
                raise StoreUnavailable(f"the store {_hide_password(self.db)} cannot write ({_first_line(e)});"
                                       " nothing of this request was kept") from None
            raise

    # ------------------------------------------------------------------ writing
    def ingest(self, rows: list[tuple], covs: list[tuple] = ()) -> int:
        """Upsert ``(node, ts, value[, flag])`` rows and ``(ts, name, value[, flag])`` covariates in one
        transaction, stamped with the server's clock (``ingested_at``)."""
        if not rows and not covs:
            return 0
        now = int(self.clock())
        obs = [_row(r, now) for r in rows]
        cov = [_row(c, now) for c in covs]
        with self._lock:
            self._write([(UPSERT_OBS, obs), (UPSERT_COV, cov)])
            hi = max([r[1] for r in obs] + [c[0] for c in cov])
            good = [r[1] for r in obs if not r[3]]
            lost = {r[0] for r in obs if r[3] and self._node_latest.get(r[0]) == r[1]}  # a newest row now flagged
            fixed = self._read_node_latest(sorted(lost)) if lost else {}
            with self._meta:
                for n in lost:
                    self._node_latest.pop(n, None)
                self._node_latest.update(fixed)
                for r in obs:
                    if not r[3] and r[1] > self._node_latest.get(r[0], -2**62):
                        self._node_latest[r[0]] = r[1]
                if good:
                    self._latest = max(good) if self._latest is None else max(self._latest, max(good))
                self._seq += 1
                self._writes.append((self._seq, hi))
                self.rows_ingested += len(obs)
                self.rows_flagged += sum(1 for r in obs if r[3])
        if time.monotonic() - self._last_prune > 60:
            self.prune()
        return len(rows)

    def prune(self) -> int:
        """Delete what was acknowledged more than the retention ago (the server's clock); the observations deleted."""
        self._last_prune = time.monotonic()
        if self.retention_s <= 0:
            return 0
        cut = int(self.clock()) - self.retention_s
        with self._lock:
            n = int(self.backend.query("SELECT COUNT(*) FROM obs WHERE ingested_at < ?", (cut,))[0][0])
            self._write([
                ("DELETE FROM obs WHERE ingested_at < ?", [(cut,)]),
                ("DELETE FROM cov WHERE ingested_at < ?", [(cut,)]),
                ("DELETE FROM forecast_value WHERE EXISTS (SELECT 1 FROM forecast f WHERE f.model ="
                 " forecast_value.model AND f.version = forecast_value.version AND f.issued_at ="
                 " forecast_value.issued_at AND f.created < ?)", [(cut,)]),
                ("DELETE FROM forecast WHERE created < ?", [(cut,)])])
            if n:
                latest = self._one("SELECT MAX(ts) FROM obs WHERE flag = 0")
                per_node = self._read_node_latest()
                with self._meta:
                    self._latest = latest
                    self._node_latest = per_node
                    self._seq += 1
                    self._writes.append((self._seq, 2**62))  # every cached window may have lost rows
                    self.rows_pruned += n
        return n
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
            self._write([
                ("DELETE FROM forecast_value WHERE model = ? AND version = ? AND issued_at = ?",
                 [(model, version, issued_at)]),
                ("INSERT INTO forecast_value VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows),
                ("INSERT INTO forecast (model, version, issued_at, created, compute_ms) VALUES (?, ?, ?, ?, ?)"
                 " ON CONFLICT (model, version, issued_at) DO UPDATE SET created = excluded.created,"
                 " compute_ms = excluded.compute_ms", [(model, version, issued_at, self.clock(), compute_ms)]),
            ])
            with self._meta:
                self.forecast_seq += 1

    # ------------------------------------------------------------------ reading
    def latest(self, nodes: list[str] | None = None) -> int | None:
        """The newest unflagged observation time (seconds), over ``nodes`` or all nodes."""
        if nodes is None:
            return self._latest
        return self._one(f"SELECT MAX(ts) FROM obs WHERE flag = 0 AND node IN ({_marks(nodes)})", tuple(nodes))

    def latest_per_node(self, nodes: list[str]) -> dict[str, int]:
        """Per node, its newest unflagged observation time (nodes without one are absent); kept in memory,
        updated by every ingest and prune (no query)."""
        with self._meta:
            known = self._node_latest
            return {n: known[n] for n in nodes if n in known}

    def last_observed(self, nodes: list[str], lo: int, hi: int) -> dict[str, int]:
        """Per node, the newest unflagged observation time in ``[lo, hi)`` (nodes without one are absent)."""
        rows = self.backend.query(f"SELECT node, MAX(ts) FROM obs WHERE flag = 0 AND ts >= ? AND ts < ? AND node IN"
                                  f" ({_marks(nodes)}) GROUP BY node", (lo, hi, *nodes))
        return {str(n): int(t) for n, t in rows}

    def flagged_in(self, nodes: list[str], lo: int, hi: int) -> dict[str, int]:
        """Per node, the number of flagged readings in ``[lo, hi)`` (nodes without one are absent)."""
        rows = self.backend.query(f"SELECT node, COUNT(*) FROM obs WHERE flag = 1 AND ts >= ? AND ts < ? AND node IN"
                                  f" ({_marks(nodes)}) GROUP BY node", (lo, hi, *nodes))
        return {str(n): int(c) for n, c in rows}

    def earliest(self) -> int | None:
        """The oldest observation time (seconds) still kept."""
        return self._one("SELECT MIN(ts) FROM obs")

    def _one(self, sql, params=()):
        v = self.backend.query(sql, params)[0][0]
        return None if v is None else int(v)

    def count(self) -> int:
        """Observations kept (flagged ones included)."""
        return int(self.backend.query("SELECT COUNT(*) FROM obs")[0][0])

    def count_flagged(self) -> int:
        """Flagged observations kept."""
        return int(self.backend.query("SELECT COUNT(*) FROM obs WHERE flag = 1")[0][0])

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
                     limit: int = 100_000) -> list[tuple[str, int, float, int]]:
        """``(node, ts, value, flag)`` rows in ``[since, until]`` ordered by time, at most ``limit``."""
        where, params = _node_time_filter("node", "ts", nodes, since, until)
        sql = f"SELECT node, ts, value, flag FROM obs WHERE {' AND '.join(where)} ORDER BY ts, node LIMIT ?"
        return self.backend.query(sql, tuple(params) + (limit,))

    def covariates_between(self, lo: int, hi: int) -> dict[int, dict[str, tuple[float, int]]]:
        """The covariates stored at times in ``[lo, hi]``: ``{ts: {name: (value, flag)}}`` (flagged ones included)."""
        out: dict[int, dict[str, tuple[float, int]]] = {}
        for ts, name, value, flag in self.backend.query("SELECT ts, name, value, flag FROM cov WHERE ts >= ? AND"
                                                        " ts <= ? ORDER BY ts, name", (lo, hi)):
            out.setdefault(int(ts), {})[str(name)] = (float(value), int(flag))
        return out

    def forecast_history(self, model: str, version: str, interval_s: int, nodes: list[str] | None,
                         since: int | None, until: int | None, limit: int = 10_000) -> list[tuple]:
        """Issued forecasts of ``model`` ``version`` whose window end lies in ``[since, until]`` (seconds), one row
        per (window end, step, node), with the observation each one is scored against.

        Returns at most ``limit`` rows ``(window_end, created, step, node, target, mean, q05, q10, q50, q90, q95,
        observed)`` ordered by window end, step and node: ``created`` is the server's wall clock (seconds, a float)
        when the forecast was stored, ``target`` the time forecast (seconds), ``observed`` the mean of the node's
        unflagged readings in ``[target, target + interval_s)`` (the bin :meth:`scores` scores it against), or
        ``None`` while there is none.
        """
        where, params = _node_time_filter("f.node", "f.issued_at", nodes, since, until)
        where, params = ["f.model = ?", "f.version = ?", *where], [interval_s, model, version, *params]
        sql = ("SELECT f.issued_at, i.created, f.step, f.node, f.target, f.mean, f.q05, f.q10, f.q50, f.q90, f.q95,"
               " (SELECT AVG(o.value) FROM obs o WHERE o.node = f.node AND o.flag = 0 AND o.ts >= f.target"
               " AND o.ts < f.target + ?)"
               " FROM forecast_value f JOIN forecast i ON i.model = f.model AND i.version = f.version"
               " AND i.issued_at = f.issued_at"
               f" WHERE {' AND '.join(where)} ORDER BY f.issued_at, f.step, f.node LIMIT ?")
        return self.backend.query(sql, tuple(params) + (limit,))

    def window_frame(self, nodes: list[str], lo: int, hi: int, covariates: list[str]) -> pd.DataFrame:
        """Long-format unflagged observations with ``lo <= ts < hi`` (and covariate columns by time), as a table
        (flagged readings are missing)."""
        rows = self.backend.query(f"SELECT ts, node, value FROM obs WHERE flag = 0 AND ts >= ? AND ts < ? AND node IN"
                                  f" ({_marks(nodes)})", (lo, hi, *nodes))
        df = pd.DataFrame(rows, columns=["ts", "node_id", "value"])
        if covariates:
            crow = self.backend.query(f"SELECT ts, name, value FROM cov WHERE flag = 0 AND ts >= ? AND ts < ?"
                                      f" AND name IN ({_marks(covariates)})", (lo, hi, *covariates))
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
        sql = ("WITH o AS (SELECT node, (ts / ?) * ? AS bin, AVG(value) AS v FROM obs"
               " WHERE flag = 0 AND ts >= ? AND ts < ? GROUP BY node, bin)"
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


def _node_time_filter(node_col: str, time_col: str, nodes, since, until) -> tuple[list[str], list]:
    """SQL conditions (joined by AND) and their parameters: ``node_col`` among ``nodes`` (all when empty) and
    ``time_col`` in ``[since, until]`` (either open when None)."""
    where, params = ["1 = 1"], []
    if nodes:
        where.append(f"{node_col} IN ({_marks(nodes)})")
        params += list(nodes)
    if since is not None:
        where.append(f"{time_col} >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{time_col} <= ?")
        params.append(until)
    return where, params


def _marks(items) -> str:
    return ", ".join("?" * len(items))
