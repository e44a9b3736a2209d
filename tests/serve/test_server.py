"""A real ``stmgt serve`` process: crash safety of acknowledged rows, ``stmgt replay``, and CLI refusals."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from live_server import free_port, start, stop  # noqa: E402

from stmgt.cli import main  # noqa: E402

pytestmark = pytest.mark.slow


def test_every_acknowledged_row_survives_sigkill(served, new_db):
    """On SQLite and on a real PostgreSQL server (``new_db``)."""
    db, port = new_db("crash"), free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(served["gru"], db, port, "--no-auto-forecast")
    acked = []
    done = threading.Event()

    def client():
        k = 0
        with httpx.Client(base_url=url, timeout=30) as h:
            while not done.is_set():
                batch = [{"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1577836800 + 60 * (g // 8))),
                          "node_id": f"road-00{g % 8}", "value": float(g)} for g in range(k * 500, k * 500 + 500)]
                try:
                    r = h.post("/v1/observations", json={"observations": batch})
                except httpx.TransportError:
                    return
                if r.status_code == 200:
                    acked.append(r.json()["accepted"])
                k += 1

    t = threading.Thread(target=client)
    try:
        t.start()
        deadline = time.time() + 60
        while sum(acked) < 5000 and time.time() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-ingestion: the client is posting continuously
        proc.wait()
        done.set()
        t.join(timeout=60)
        n_acked = sum(acked)
        assert n_acked >= 5000
        proc = start(served["gru"], db, port, "--no-auto-forecast")
        kept = httpx.get(f"{url}/v1/models").json()["store"]["observations"]
        assert n_acked <= kept <= n_acked + 500  # the batch in flight may or may not have committed
        last = n_acked - 1  # the last acknowledged row is there with its value
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1577836800 + 60 * (last // 8)))
        got = httpx.get(f"{url}/v1/observations", params={"nodes": f"road-00{last % 8}", "since": ts,
                                                          "until": ts}).json()["observations"]
        assert [{k: v for k, v in o.items() if k != "flagged"} for o in got] == [  # (big values are flagged)
            {"timestamp": ts + "Z", "node_id": f"road-00{last % 8}", "value": float(last)}]  # answers: UTC, Z
    finally:
        done.set()
        stop(proc)


def test_replay_streams_a_dataset_into_the_service(served, panel, tmp_path, capsys):
    from stmgt.data.windows import chronological_splits

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(served["gru"], tmp_path / "replay.db", port, "--api-key-env", "STMGT_TEST_KEY",
                 env={"STMGT_TEST_KEY": "k3y"})
    try:
        assert main(["replay", str(served["city"]), "--to", url, "--speed", "0", "--steps", "2"]) == 2
        assert "the service refused a batch (HTTP 401)" in capsys.readouterr().err
        os.environ["STMGT_TEST_KEY"] = "k3y"
        try:
            assert main(["replay", str(served["city"]), "--to", url, "--speed", "0", "--batch", "100",
                         "--api-key-env", "STMGT_TEST_KEY"]) == 0
            lo, hi = chronological_splits(panel.num_steps)["test"]
            expected = int(panel.mask[lo:hi, :, 0].sum())
            assert httpx.get(f"{url}/v1/models").json()["store"]["observations"] == expected
            # paced: 2 steps of 5 minutes at 3000x take about 0.1 s
            t0 = time.time()
            assert main(["replay", str(served["city"]), "--to", url, "--speed", "3000", "--start", "val",
                         "--steps", "3", "--api-key-env", "STMGT_TEST_KEY"]) == 0
            assert 0.15 < time.time() - t0 < 30
        finally:
            del os.environ["STMGT_TEST_KEY"]
        deadline = time.time() + 30  # the issuer forecasts once the replay settles; then it is scored
        while time.time() < deadline:
            s = httpx.get(f"{url}/v1/scores").json()["scores"][0]
            if s["forecasts_issued"]:
                break
            time.sleep(0.2)
        assert s["forecasts_issued"] >= 1
        metrics = httpx.get(f"{url}/metrics").text
        assert "stmgt_observations_ingested_total" in metrics
        assert httpx.get(f"{url}/").status_code == 200
        _dashboard_draws(url, served["gru"])
        _chromium_draws(url, tmp_path)
    finally:
        stop(proc)


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run")


def _chromium_draws(url, tmp_path):
    """The dashboard in real headless Chromium (Debian's ``chromium``; `.ci/run` installs it where it can):
    after its scripts ran against the live service, every road is drawn and coloured, the latest observation
    and the model version are on screen; a screenshot is taken (docs/images/dashboard.png is one)."""
    import re
    import shutil

    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("no chromium here (apt-get install chromium); the node stand-in DOM test ran")
    run = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000"]
    dom = subprocess.run([*run, "--dump-dom", url + "/"], capture_output=True, text=True, timeout=120).stdout
    svg = dom[dom.index('id="map"'):dom.index("</svg>", dom.index('id="map"'))]
    assert len(re.findall(r'<circle[^>]* class="node', svg)) == 8  # one marker per road of the tiny city
    assert len(re.findall(r'<circle[^>]* fill="rgb\(', svg)) >= 8  # coloured by the forecast
    assert re.search(r'id="latest">\d{4}-\d\d-\d\dT', dom) and re.search(r'id="version">gru [0-9a-f]{12}', dom)
    shot = tmp_path / "dashboard.png"
    subprocess.run([*run, "--window-size=1280,800", f"--screenshot={shot}", url + "/"], capture_output=True,
                   timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_cli_refusals_of_issue_21(served, tmp_path, capsys, monkeypatch):
    """Each ends in one ``stmgt: error:`` line and exit status 2, without a traceback."""

    def one_line(*argv):
        assert main(list(argv)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("stmgt: error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    run = str(served["gru"])
    assert "--port 70000: give a port between 1 and 65535" in one_line("serve", run, "--port", "70000")
    assert "is a folder; give the path of a SQLite file" in one_line("serve", run, "--db", str(tmp_path))
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00garbage" * 1000)
    assert "not a SQLite database, or a damaged one" in one_line("serve", run, "--db", str(garbage))
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as where the driver is not installed
    err = one_line("serve", run, "--db", "postgresql+psycopg://city:pw@localhost/traffic")
    assert "the database driver psycopg is not installed; pip install 'stmgt[serve]'" in err and ":pw@" not in err
    monkeypatch.undo()
    assert "--to 'notaurl': not an http:// or https:// URL" in one_line("replay", "synthetic", "--to", "notaurl")
    assert "--to 'http://x:99999': not a URL" in one_line("replay", "synthetic", "--to", "http://x:99999")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert "cannot listen there" in one_line("serve", run, "--port", str(port), "--db", str(tmp_path / "p.db"))


def test_two_services_on_one_store_the_second_is_refused(served, tmp_path):
    db = tmp_path / "one.db"
    proc = start(served["gru"], db, free_port(), "--no-auto-forecast")
    try:
        e = {**os.environ, "PYTHONPATH": os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "src"))}
        second = subprocess.run([sys.executable, "-m", "stmgt", "serve", str(served["gru"]), "--db", str(db), "--port",
                                 str(free_port())], env=e, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"the store is in use by another `stmgt serve` (pid {proc.pid}, lock {db}.lock)" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        stop(proc)


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_huge_chunked_body_is_refused_before_it_is_read(served, tmp_path):
    """Issue 21, security 2: 100 MB chunked with a wrong key was read and parsed whole before the 401."""
    port = free_port()
    proc = start(served["gru"], tmp_path / "b.db", port, "--no-auto-forecast", "--api-key-env", "STMGT_TEST_KEY",
                 env={"STMGT_TEST_KEY": "k3y"})
    try:
        rss0 = _rss_kb(proc.pid)
        for key, status in (("wrong", 401), ("k3y", 413)):
            t0 = time.time()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sk:
                sk.sendall(f"POST /v1/observations HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type:"
                           " application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
                chunk = b"%x\r\n" % (1 << 20) + b" " * (1 << 20) + b"\r\n"
                answer = b""
                sk.settimeout(0.05)
                for _ in range(100):  # up to 100 MB, unless the server answers first
                    try:
                        sk.sendall(chunk)
                    except OSError:
                        break
                    try:
                        answer += sk.recv(65536)
                    except TimeoutError:
                        continue
                    if b"\r\n\r\n" in answer:
                        break
                sk.settimeout(10)
                while b"\r\n\r\n" not in answer:
                    part = sk.recv(65536)
                    if not part:
                        break
                    answer += part
            assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
            assert time.time() - t0 < 20
        assert _rss_kb(proc.pid) - rss0 < 100_000  # not the 1.5 GB of issue 21
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["store"]["observations"] == 0
    finally:
        stop(proc)


def test_cli_refusals(served, capsys):
    assert main(["serve", "/no/such/run"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    os.environ.pop("STMGT_UNSET_KEY", None)
    assert main(["serve", str(served["gru"]), "--api-key-env", "STMGT_UNSET_KEY"]) == 2
    assert "STMGT_UNSET_KEY is not set or empty" in capsys.readouterr().err
    port = free_port()
    assert main(["replay", "synthetic", "--nodes", "8", "--days", "1", "--to", f"http://127.0.0.1:{port}",
                 "--retries", "0", "--steps", "1"]) == 2
    assert "cannot reach the service" in capsys.readouterr().err
    assert main(["replay", "synthetic", "--nodes", "8", "--days", "1", "--to", "http://127.0.0.1:9",
                 "--start", "someday"]) == 2
    assert "--start 'someday' is neither a split" in capsys.readouterr().err


def _dashboard_draws(url, run):
    """The dashboard's script, run by node with a stand-in DOM: map, legend, chart with both bands, scores."""
    import json
    import shutil
    from pathlib import Path

    node = shutil.which("node")
    if node is None:
        return  # no JavaScript runtime here: the HTML/asset checks of test_app still run
    app_js = Path(__file__).resolve().parents[2] / "src" / "stmgt" / "serve" / "static" / "app.js"
    p = subprocess.run([node, str(Path(__file__).with_name("fake_dom.js")), str(app_js), url], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["message"] == "" and out["latest"] != "none yet" and out["version"].startswith("gru ")
    assert out["circles"] == 8 and out["roads"] > 0 and all(f.startswith("rgb(") for f in out["fills1"])
    for lines, fills in ((out["lines1"], out["fills1"]), (out["lines12"], out["fills12"])):
        colour = dict(zip(out["nodes"], fills))  # every line has its target road's colour
        assert lines and all(x["stroke"] == colour[x["target"]] for x in lines)
    scaler = json.loads((Path(run) / "data.json").read_text())["scaler"]  # the fixed scale: training mean +- 2 sd
    lo, hi = scaler["mean"][0] - 2 * scaler["std"][0], scaler["mean"][0] + 2 * scaler["std"][0]
    for legend, step in ((out["legend1"], 1), (out["legend12"], 12)):
        assert [float(t) for t in legend["ticks"]] == pytest.approx([lo + k * (hi - lo) / 4 for k in range(5)],
                                                                    abs=0.5)  # (as written: 0 decimals here)
        assert f"forecast mean at +{step}, km/h" in legend["text"]
    assert out["chartTitle"].startswith("road-001: history and forecast")
    assert out["chart"].count("polygon") == 2 and out["chart"].count("polyline") == 2  # 90%, 80% bands; obs, mean
    assert out["fills12"] != out["fills1"] or len(set(out["fills1"])) == 1
    assert "<table>" in out["scores"]
    assert all(f.startswith("/v1/") for f in out["fetched"])  # nothing but this service


XSS = '<img src=x onerror="document.title=\'pwned\'">'


def test_no_script_from_data_reaches_the_dashboard(served, rows, tmp_path):
    """Issue 21, security 3: a run folder, a city's units and a node id that are HTML run no script: the node
    stand-in DOM sees no innerHTML write, and real Chromium draws them as text."""
    import json
    import re
    import shutil
    from pathlib import Path

    run = tmp_path / "<img src=x onerror=alert(1)>"
    shutil.copytree(served["gru"], run, ignore=shutil.ignore_patterns("checkpoints"))
    meta = json.loads((run / "data.json").read_text())
    meta["units"] = XSS
    old = meta["node_ids"][1]
    meta["node_ids"][1] = "<svg onload=alert(2)>"
    (run / "data.json").write_text(json.dumps(meta))
    (run / "manifest.json").unlink(missing_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(run, tmp_path / "x.db", port, "--no-auto-forecast")
    try:
        batch = [dict(r, node_id=meta["node_ids"][1]) if r["node_id"] == old else r for r in rows(-12)]
        assert httpx.post(f"{url}/v1/observations", json={"observations": batch}).status_code == 200
        assert httpx.get(f"{url}/v1/forecast").status_code == 200  # issued, then scored in the table
        assert "script-src 'self'" in httpx.get(url + "/").headers["content-security-policy"]
        node = shutil.which("node")
        if node is not None:
            app_js = Path(__file__).resolve().parents[2] / "src" / "stmgt" / "serve" / "static" / "app.js"
            p = subprocess.run([node, str(Path(__file__).with_name("fake_dom.js")), str(app_js), url],
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stderr
            out = json.loads(p.stdout.strip().splitlines()[-1])
            assert out["htmlWrites"] == []  # nothing is ever parsed as HTML
            page = out["page"]
            assert "<img" not in page and "<svg onload" not in page
            assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the model's name, as text (scores, version)
            assert "&lt;img src=x onerror=\"document.title" in page  # the units, as text (legend, chart title)
            assert out["chartTitle"].startswith("<svg onload=alert(2)>: history and forecast (<img")
        browser = shutil.which("chromium")
        if browser is None:
            pytest.skip("no chromium here (apt-get install chromium); the node stand-in DOM test ran")
        cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
               "--dump-dom", url + "/"]
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
        svg = dom[dom.index('id="map"'):dom.index("</svg>", dom.index('id="map"'))]
        assert len(re.findall(r'<circle[^>]* class="node', svg)) == 8
        assert "<title>stmgt live map</title>" in dom and "pwned" not in dom.split("</title>")[0]
        assert "<img" not in dom and "onerror=alert" not in dom.replace("&lt;img src=x onerror=alert(1)&gt;", "")
        assert "&lt;img src=x onerror=alert(1)&gt;" in dom  # drawn as text
    finally:
        stop(proc)
