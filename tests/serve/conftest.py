"""Fixtures for the service tests: one tiny synthetic city and tiny trained runs, made once per session."""

import pytest

TINY_STMGT = """
model: {name: stmgt, hidden: 16, blocks: 1, heads: 2, mixtures: 3}
train: {batch_size: 16, max_epochs: 1, progress: false}
"""


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """``{"city": folder, "gru": run (calibrated), "stmgt": run}``: 8 nodes, 3 days, one epoch each.

    ``STMGT_SERVE_TEST_RUNS=DIR`` reuses a folder made by an earlier session (city/, gru/, stmgt/)
    to iterate on the service without retraining.
    """
    import os
    from pathlib import Path

    from stmgt.cli import main

    reuse = os.environ.get("STMGT_SERVE_TEST_RUNS")
    if reuse and all((Path(reuse) / f).is_dir() for f in ("city", "gru", "stmgt")):
        d = Path(reuse)
        return {"dir": d, "city": d / "city", "gru": d / "gru", "stmgt": d / "stmgt"}
    d = tmp_path_factory.mktemp("serve")
    assert main(["data", "synth", "--out", str(d / "city"), "--nodes", "8", "--days", "3"]) == 0
    assert main(["train", "--data", str(d / "city"), "--out", str(d / "gru"), "--model", "gru",
                 "--max-epochs", "1"]) == 0
    assert main(["calibrate", str(d / "gru")]) == 0
    (d / "tiny.yaml").write_text(TINY_STMGT)
    assert main(["train", "--config", str(d / "tiny.yaml"), "--data", str(d / "city"), "--out",
                 str(d / "stmgt")]) == 0
    return {"dir": d, "city": d / "city", "gru": d / "gru", "stmgt": d / "stmgt"}


@pytest.fixture
def make(served, tmp_path):
    """``make(runs=("gru",), db=None, **service options) -> TestClient`` on a fresh store (``runs``: names of the
    ``served`` runs or run folders); the issuer is off unless ``auto_forecast=True``; stores closed at the end."""
    from fastapi.testclient import TestClient

    from stmgt.serve.app import Service, create_app

    made = []

    def build(runs=("gru",), db=None, **kw):
        kw.setdefault("auto_forecast", False)
        dirs = [served[r] if isinstance(r, str) else r for r in runs]
        svc = Service(dirs, db=db or str(tmp_path / f"s{len(made)}.db"), **kw)
        c = TestClient(create_app(svc))
        c.service = svc
        made.append(c)
        return c

    yield build
    for c in made:
        c.service.store.close()


@pytest.fixture(scope="session")
def panel(served):
    """The synthetic city the runs were trained on."""
    from stmgt.data.panel import Panel

    return Panel.load(served["city"])


@pytest.fixture(scope="session")
def rows(panel):
    """``rows(lo, hi)``: API rows of steps ``lo:hi`` of the city (Python slice semantics)."""
    from stmgt.serve.replay import step_rows

    def make(lo, hi=None):
        return [r for t in range(panel.num_steps)[lo:hi] for r in step_rows(panel, t)]

    return make


# ---------------------------------------------------------------- a throwaway PostgreSQL server
class _Postgres:
    """A PostgreSQL server of its own (initdb into a temporary folder, a Unix socket there, no TCP), run as the
    ``postgres`` user when the tests run as root (the server refuses root). ``database()`` makes a fresh database."""

    def __init__(self):
        import glob
        import os
        import shutil
        import socket
        import tempfile

        found = [d for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
                 if os.path.exists(os.path.join(d, "initdb"))]
        bindir = found[0] if found else os.path.dirname(shutil.which("initdb") or "")
        if not bindir or not os.path.exists(os.path.join(bindir, "pg_ctl")):
            raise _Unavailable("no PostgreSQL server binaries (initdb, pg_ctl; Debian: apt-get install postgresql)")
        self.prefix: list[str] = []
        self.dir = tempfile.mkdtemp(prefix="stmgt-pg-")
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise _Unavailable("running as root and there is no 'postgres' user to run the server as") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data, self.log = os.path.join(self.dir, "data"), os.path.join(self.dir, "log")
        self.pg_ctl = os.path.join(bindir, "pg_ctl")
        self._run([os.path.join(bindir, "initdb"), "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                   "--no-sync"])
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
        self._run([self.pg_ctl, "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", opts, "start"])
        self.n = 0

    def _run(self, cmd):
        import subprocess

        p = subprocess.run(self.prefix + cmd, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]
            raise _Unavailable(f"{cmd[0].rsplit('/', 1)[-1]} failed: {tail[0]}")

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@/{dbname}?host={self.dir}&port={self.port}"

    def database(self) -> str:
        """A new empty database's SQLAlchemy URL."""
        import psycopg

        self.n += 1
        name = f"t{self.n}"
        with psycopg.connect(host=self.dir, port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self):
        import shutil
        import subprocess

        subprocess.run(self.prefix + [self.pg_ctl, "-D", self.data, "-m", "immediate", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class _Unavailable(Exception):
    pass


@pytest.fixture(scope="session")
def postgres():
    """A running throwaway PostgreSQL server (:class:`_Postgres`); skipped, saying why, where none can start."""
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'stmgt[serve]')")
    try:
        pg = _Postgres()
    except _Unavailable as e:
        pytest.skip(f"no PostgreSQL server for the tests: {e}")
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def new_db(request, tmp_path):
    """``new_db(name="a") -> str``: a store location on each backend (the same name gives the same store)."""
    made: dict[str, str] = {}
    pg = request.getfixturevalue("postgres") if request.param == "postgresql" else None

    def make(name: str = "a") -> str:
        if name not in made:
            made[name] = str(tmp_path / f"{name}.db") if pg is None else pg.database()
        return made[name]

    make.backend = request.param
    return make
