"""The dashboard's map in real headless Chromium, driven over the DevTools protocol: a fixed colour scale (the same
value has the same colour at every horizon), units in the legend, road ids on hover, a chart with labelled
gridlines whose time labels do not overlap, silent and flagged roads drawn as such, one line per graph edge.

A real ``stmgt serve`` runs two statistical models of one tiny synthetic city: ``historical_average`` (its +1 and
+12 forecasts differ) and ``last_value`` (persistence: every horizon is the last reading), plus a copy of the latter
whose city declares no units. The oracle is computed here from the run folders and the API's numbers: the colour
of a value is the documented palette over the documented range (the training mean +- 2 sd read from data.json,
each road's 95th percentile of the readings posted here, or the page's ?lo=&hi=).
"""

import base64
import io
import json
import math
import os
import shutil
import subprocess
import time
from datetime import datetime, timedelta

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from live_server import free_port, start, stop  # noqa: E402

pytestmark = pytest.mark.slow

SILENT, FLAGGED, CHARTED = "road-007", "road-006", "road-002"
STOPS = [(215, 48, 39), (252, 141, 89), (254, 224, 139), (145, 207, 96), (26, 152, 80)]  # docs/serving.md, The map
GREY = "#bbb"


def palette(v, lo, hi):
    """The map's documented colour of ``v`` on the scale ``lo..hi``, as ``(r, g, b)`` (None: no colour)."""
    if v is None or not math.isfinite(v):
        return None
    t = min(1.0, max(0.0, (v - lo) / (hi - lo)))
    k = min(len(STOPS) - 2, int(math.floor(t * (len(STOPS) - 1))))
    u = t * (len(STOPS) - 1) - k
    return tuple(math.floor(a + (b - a) * u + 0.5) for a, b in zip(STOPS[k], STOPS[k + 1]))


def rgb(text):
    assert text.startswith("rgb(") and text.endswith(")"), text
    return tuple(int(x) for x in text[4:-1].split(","))


def close(a, b):
    """Two colours equal up to one unit per channel (float rounding at a .5 boundary)."""
    return a is not None and b is not None and all(abs(x - y) <= 1 for x, y in zip(a, b))


# ---------------------------------------------------------------- the service
@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """A served city: ``{"url", "dir", "posted": {node: [(ts, value)]}, "latest"}`` (the server runs meanwhile)."""
    if shutil.which("chromium") is None:
        pytest.skip("no chromium here (Debian: apt-get install chromium); the map is tested in real Chromium only")
    from stmgt.cli import main
    from stmgt.data.panel import Panel
    from stmgt.serve.replay import step_rows

    d = tmp_path_factory.mktemp("map")
    assert main(["data", "synth", "--out", str(d / "city"), "--nodes", "8", "--days", "2"]) == 0
    for name, model in (("ha", "historical_average"), ("lv", "last_value")):
        assert main(["train", "--data", str(d / "city"), "--out", str(d / name), "--model", model]) == 0
    shutil.copytree(d / "lv", d / "bare")  # the same model, from a city that declares no units
    meta = json.loads((d / "bare" / "data.json").read_text())
    meta["units"] = ""
    (d / "bare" / "data.json").write_text(json.dumps(meta))
    (d / "bare" / "manifest.json").unlink(missing_ok=True)

    panel = Panel.load(d / "city")
    rows = [r for t in range(panel.num_steps - 288, panel.num_steps) for r in step_rows(panel, t)]  # the last day
    window = sorted({r["timestamp"] for r in rows})[-12:]
    rows = [r for r in rows if not (r["node_id"] == SILENT and r["timestamp"] in window)]  # silent for an hour
    for r in rows:
        if r["node_id"] == FLAGGED and r["timestamp"] == window[-4]:
            r["value"] = 1e6  # one implausible reading: stored flagged
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([d / "ha", d / "lv", d / "bare"], d / "map.db", port, "--no-auto-forecast")
    try:
        for i in range(0, len(rows), 4000):
            r = httpx.post(url + "/v1/observations", json={"observations": rows[i:i + 4000]}, timeout=60)
            assert r.status_code == 200, r.text
        posted: dict = {}
        for r in rows:
            if r["value"] < 1e5:
                posted.setdefault(r["node_id"], []).append((r["timestamp"], r["value"]))
        yield {"url": url, "dir": d, "posted": posted, "latest": window[-1]}
    finally:
        stop(proc)


def forecast(city, model):
    """``{(node, step): row}`` of the model's forecast, and its ``roads``."""
    body = httpx.get(f"{city['url']}/v1/forecast", params={"model": model}, timeout=60).json()
    return {(r["node_id"], r["step"]): r for r in body["forecasts"]}, {r["node_id"]: r for r in body["roads"]}


def training_range(city, model):
    """The default absolute scale, from the run folder itself: the training mean +- 2 training sd."""
    sc = json.loads((city["dir"] / model / "data.json").read_text())["scaler"]
    mean, std = sc["mean"][0], sc["std"][0]
    return mean - 2 * std, mean + 2 * std


# ---------------------------------------------------------------- Chromium over the DevTools protocol (a pipe)
class Browser:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (no extra package, no port)."""

    def __init__(self, profile, width=1280, height=800):
        a_r, a_w = os.pipe()
        b_r, b_w = os.pipe()

        def fds():  # the protocol's pipes are the child's fds 3 (commands in) and 4 (answers out)
            import fcntl

            r, w = fcntl.fcntl(a_r, fcntl.F_DUPFD, 10), fcntl.fcntl(b_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-pipe",
                "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        self.proc = subprocess.Popen([shutil.which("chromium"), *args], pass_fds=(3, 4), preexec_fn=fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(a_r)
        os.close(b_w)
        self.w, self.r = os.fdopen(a_w, "wb", buffering=0), os.fdopen(b_r, "rb", buffering=0)
        self.n, self.buf = 0, b""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.size(width, height)

    def send(self, method, page=False, timeout=60, **params):
        import select

        self.n += 1
        msg = {"id": self.n, "method": method, "params": params}
        if page:
            msg["sessionId"] = self.session
        self.w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            while b"\0" not in self.buf:
                if not select.select([self.r], [], [], max(0.0, deadline - time.time()))[0]:
                    raise AssertionError(f"chromium did not answer {method} in {timeout} s")
                chunk = self.r.read(1 << 16)
                if not chunk:
                    raise AssertionError(f"chromium closed the protocol pipe during {method}")
                self.buf += chunk
            raw, _, self.buf = self.buf.partition(b"\0")
            answer = json.loads(raw)
            if answer.get("id") == self.n:
                if "error" in answer:
                    raise AssertionError(f"{method}: {answer['error']}")
                return answer["result"]

    def size(self, width, height):
        self.send("Emulation.setDeviceMetricsOverride", page=True, width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def js(self, expression):
        r = self.send("Runtime.evaluate", page=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url, ready="true"):
        """Navigate and wait until the dashboard has refreshed once and ``ready`` (a JS expression) holds."""
        self.send("Page.navigate", page=True, url=url)
        deadline = time.time() + 60
        cond = (f"document.readyState === 'complete' && !!document.getElementById('refreshed') &&"
                f" document.getElementById('refreshed').textContent !== '–' && ({ready})")
        while time.time() < deadline:
            if self.js(f"(() => {{ try {{ return {cond}; }} catch (e) {{ return false; }} }})()"):
                return
            time.sleep(0.1)
        raise AssertionError(f"the dashboard did not draw {url} in 60 s: {self.js('document.body.innerText')[:500]}")

    def screenshot(self, path, selector=None):
        """A PNG of the page (or of one element) saved to ``path``; returns the PIL image."""
        from PIL import Image

        params = {"format": "png"}
        if selector:
            box = self.js(f"(() => {{ const b = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                          " return [b.x, b.y, b.width, b.height]; })()")
            params["clip"] = {"x": box[0], "y": box[1], "width": box[2], "height": box[3], "scale": 1}
        data = base64.b64decode(self.send("Page.captureScreenshot", page=True, **params)["data"])
        path.write_bytes(data)
        return Image.open(io.BytesIO(data)).convert("RGB")

    def close(self):
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def browser(city, tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium") / "profile")
    yield b
    b.close()


READ_MAP = """(() => {
  const box = (e) => { const b = e.getBBox(); return [b.x, b.y, b.width, b.height]; };
  const nodes = [...document.querySelectorAll('#map circle.node')].map((c) => ({
    node: c.getAttribute('data-node'), fill: c.getAttribute('fill'), cls: c.getAttribute('class'),
    status: c.getAttribute('data-status'), ring: !!c.parentNode.querySelector('.flag-ring'),
    title: c.parentNode.querySelector('title') ? c.parentNode.querySelector('title').textContent : null,
    dash: getComputedStyle(c).strokeDasharray, centre: (() => { const b = c.getBoundingClientRect();
      return [b.x + b.width / 2, b.y + b.height / 2]; })() }));
  const lines = [...document.querySelectorAll('#map line.road')].map((l) => ({
    source: l.getAttribute('data-source'), target: l.getAttribute('data-target'), stroke: l.getAttribute('stroke'),
    title: l.querySelector('title') ? l.querySelector('title').textContent : null,
    dash: getComputedStyle(l).strokeDasharray }));
  const legend = document.getElementById('legend');
  const chart = document.getElementById('chart');
  return { nodes, lines, legend: legend.textContent,
    ticks: [...legend.querySelectorAll('.lg-tick')].map((t) => t.textContent),
    chartTitle: document.getElementById('chartTitle').textContent,
    ytick: [...chart.querySelectorAll('text.tick-y')].map((t) => ({ text: t.textContent, box: box(t) })),
    xtick: [...chart.querySelectorAll('text.tick-x')].map((t) => ({ text: t.textContent, box: box(t) })),
    gridlines: chart.querySelectorAll('.gridline').length,
    axisTitle: [...chart.querySelectorAll('.axis-title')].map((t) => t.textContent),
    chartWidth: chart.viewBox.baseVal.width,
    step: document.getElementById('stepLabel').textContent };
})()"""

DRAWN = "document.querySelectorAll('#map circle.node').length > 0"
CHARTED_READY = DRAWN + " && document.querySelectorAll('#chart text.tick-x').length > 0"


def set_step(browser, step):
    """Move the horizon slider as a user does (an input event), and read the map back."""
    browser.js(f"(() => {{ const s = document.getElementById('step'); s.value = '{step}';"
               " s.dispatchEvent(new Event('input')); })()")
    got = browser.js(READ_MAP)
    assert got["step"].startswith(f"+{step} ")
    return got


def fills(got):
    return {n["node"]: n["fill"] for n in got["nodes"]}


def check_colours(got, means, step, colour_of):
    """Every road marker and every line has the oracle's colour of its (target) road's forecast."""
    nodes = {n["node"]: n for n in got["nodes"]}
    assert len(nodes) == 8
    for node, n in nodes.items():
        want = colour_of(node, means[(node, step)]["mean"])
        assert close(rgb(n["fill"]), want), (node, step, n["fill"], want)
    for line in got["lines"]:
        assert line["stroke"] == nodes[line["target"]]["fill"], line  # coloured by the road it leads to


# ---------------------------------------------------------------- the tests
def test_fixed_scale_differs_where_forecasts_differ(city, browser, tmp_path):
    """Horizon +1 and +12 of a model whose forecasts change with the horizon look different; of a model whose
    forecasts do not (persistence), they look the same, pixel for pixel; every colour is the oracle's."""
    url, drawn = city["url"], {}
    for model in ("ha", "lv"):
        means, _ = forecast(city, model)
        lo, hi = training_range(city, model)

        def colour_of(node, v, lo=lo, hi=hi):
            return palette(v, lo, hi)

        browser.open(f"{url}/?model={model}&refresh=3600", DRAWN)
        got1 = set_step(browser, 1)
        shot1 = browser.screenshot(tmp_path / f"{model}_step1.png", "#map")
        browser.screenshot(tmp_path / f"{model}_step1_page.png")
        got12 = set_step(browser, 12)
        shot12 = browser.screenshot(tmp_path / f"{model}_step12.png", "#map")
        browser.screenshot(tmp_path / f"{model}_step12_page.png")
        check_colours(got1, means, 1, colour_of)
        check_colours(got12, means, 12, colour_of)
        drawn[model] = got12
        nodes = sorted({n for n, _ in means})
        same = [n for n in nodes if means[(n, 1)]["mean"] == means[(n, 12)]["mean"]]
        for n in same:  # the same forecast at both horizons: the same colour (a fixed scale)
            assert fills(got1)[n] == fills(got12)[n], n
        if model == "lv":
            assert same == nodes  # persistence: every road's +12 is its +1 (the oracle's precondition)
            assert fills(got1) == fills(got12)
            assert list(shot1.getdata()) == list(shot12.getdata())  # the map looks the same, pixel for pixel
        else:
            apart = [n for n in nodes if max(abs(a - b) for a, b in zip(palette(means[(n, 1)]["mean"], lo, hi),
                                                                         palette(means[(n, 12)]["mean"], lo, hi))) > 1]
            assert len(apart) >= 2, "the city's +1 and +12 forecasts should differ"  # the oracle's precondition
            for n in nodes:
                if n in apart:
                    assert fills(got1)[n] != fills(got12)[n], n
                elif palette(means[(n, 1)]["mean"], lo, hi) == palette(means[(n, 12)]["mean"], lo, hi):
                    assert fills(got1)[n] == fills(got12)[n], n
            assert list(shot1.getdata()) != list(shot12.getdata())  # the map looks different
    # a page opened at ?step=12 draws what the slider drew
    browser.open(f"{url}/?model=ha&step=12&refresh=3600", DRAWN)
    assert fills(browser.js(READ_MAP)) == fills(drawn["ha"])


def test_legend_edges_hover_silent_and_flagged_roads(city, browser):
    url = city["url"]
    graph = httpx.get(f"{url}/v1/graph", params={"model": "ha"}).json()
    means, roads = forecast(city, "ha")
    assert roads[SILENT]["status"] == "no data" and roads[FLAGGED]["flagged_readings"] == 1  # the oracle's setup
    assert all(r["status"] == "ok" for n, r in roads.items() if n != SILENT)
    browser.open(f"{url}/?model=ha&refresh=3600", DRAWN)
    got = browser.js(READ_MAP)

    # one straight line per edge of /v1/graph (self-loops aside), each named by its ends on hover
    edges = sorted((e["source"], e["target"]) for e in graph["edges"] if e["source"] != e["target"])
    assert edges and sorted((x["source"], x["target"]) for x in got["lines"]) == edges
    assert all(x["title"].startswith(f"{x['source']} → {x['target']}") for x in got["lines"])

    # road ids on hover: a tooltip (<title>) per road, and the hover line under the map where the mouse is
    for n in got["nodes"]:
        assert n["title"].startswith(f"{n['node']}: ") and "km/h at +1" in n["title"], n["title"]
    target = next(n for n in got["nodes"] if n["node"] == CHARTED)
    browser.send("Input.dispatchMouseEvent", page=True, type="mouseMoved", x=target["centre"][0],
                 y=target["centre"][1])
    hover = browser.js("document.getElementById('hover').textContent")
    assert hover.startswith(f"{CHARTED}: ") and hover.split()[2:5] == ["km/h", "at", "+1"], hover
    assert abs(float(hover.split()[1]) - means[(CHARTED, 1)]["mean"]) <= 0.051, hover

    # silent and flagged roads are drawn as such
    nodes = {n["node"]: n for n in got["nodes"]}
    assert "silent" in nodes[SILENT]["cls"] and nodes[SILENT]["status"] == "no data"
    assert nodes[SILENT]["dash"] not in ("none", "") and "no data" in nodes[SILENT]["title"]
    for n, x in nodes.items():
        assert x["ring"] == (n == FLAGGED), n  # a ring around the road with an ignored reading only
        if n != SILENT:
            assert "silent" not in x["cls"] and x["dash"] in ("none", ""), n
    assert "1 implausible reading(s) ignored" in nodes[FLAGGED]["title"]
    for x in got["lines"]:
        assert (x["dash"] not in ("none", "")) == (x["target"] == SILENT), x

    # the legend: the scale's numbers (the oracle's training range), the units, the markers with their counts
    lo, hi = training_range(city, "ha")
    ticks = [t for t in got["ticks"] if t != "km/h"]
    assert len(ticks) == 5
    for k, t in enumerate(ticks):
        assert abs(float(t) - (lo + k * (hi - lo) / 4)) <= 0.5, (k, t, lo, hi)
    assert "km/h" in got["ticks"] and "forecast mean at +1, km/h" in got["legend"]
    assert "training mean ± 2 sd" in got["legend"]
    assert "silent" in got["legend"] and "(dashed) (1)" in got["legend"]
    assert "flagged: implausible readings ignored (1)" in got["legend"]
    assert "sparse" in got["legend"] and "value" not in got["legend"]


def test_units_always_shown(city, browser):
    """A city that declares no units says so, in the legend and the chart; the legend keeps its numbers."""
    browser.open(f"{city['url']}/?model=bare&road={CHARTED}&refresh=3600", CHARTED_READY)
    got = browser.js(READ_MAP)
    lo, hi = training_range(city, "bare")
    assert "forecast mean at +1, (no units declared)" in got["legend"] and "value" not in got["legend"]
    assert [float(t) for t in got["ticks"]] == pytest.approx([lo + k * (hi - lo) / 4 for k in range(5)], abs=0.5)
    assert got["chartTitle"] == f"{CHARTED}: history and forecast ((no units declared))"
    assert got["axisTitle"] == ["(no units declared)"]


def test_chart_gridlines_and_time_labels(city, browser, tmp_path):
    """Several labelled y gridlines covering the data; time labels at a round interval that never overlap, also
    on a narrow screen (fewer labels)."""
    means, _ = forecast(city, "ha")
    fc = [means[(CHARTED, s)] for s in range(1, 13)]
    since = (datetime.fromisoformat(city["latest"]) - timedelta(minutes=3 * 12 * 5)).isoformat()
    shown = [v for ts, v in city["posted"][CHARTED] if ts >= since]  # the readings the chart shows (3 windows)
    assert 30 <= len(shown) <= 37  # (the synthetic city misses about 1% of its readings)
    counts = []
    for width in (1280, 700):
        browser.size(width, 800)
        browser.open(f"{city['url']}/?model=ha&road={CHARTED}&refresh=3600", CHARTED_READY)
        got = browser.js(READ_MAP)
        browser.screenshot(tmp_path / f"chart_{width}.png", "#chart")
        assert got["chartTitle"] == f"{CHARTED}: history and forecast (km/h)" and got["axisTitle"] == ["km/h"]
        ys = [float(t["text"]) for t in got["ytick"]]
        assert len(ys) >= 4 and ys == sorted(ys)
        steps = {round(b - a, 9) for a, b in zip(ys, ys[1:])}
        assert len(steps) == 1  # evenly spaced round values
        lo_data = min(min(r["quantiles"]["0.05"] for r in fc), min(shown))
        hi_data = max(max(r["quantiles"]["0.95"] for r in fc), max(shown))
        assert ys[0] <= lo_data and ys[-1] >= hi_data and ys[0] > lo_data - steps.pop() * 1.001
        assert got["gridlines"] >= len(ys) + len(got["xtick"])
        xs = got["xtick"]
        assert len(xs) >= 3, xs
        for t in xs:
            assert len(t["text"]) == 5 and t["text"][2] == ":", t
            assert t["box"][0] >= 0 and t["box"][0] + t["box"][2] <= got["chartWidth"], t  # inside the chart
        minutes = [int(t["text"][:2]) * 60 + int(t["text"][3:]) for t in xs]
        gaps = {(b - a) % 1440 for a, b in zip(minutes, minutes[1:])}
        assert len(gaps) == 1 and gaps.pop() in (5, 10, 15, 20, 30, 60, 120)
        for a, b in zip(xs, xs[1:]):  # measured by the browser: a gap between every two labels
            assert a["box"][0] + a["box"][2] < b["box"][0], (a, b)
        counts.append(len(xs))
    browser.size(1280, 800)
    assert counts[1] < counts[0]  # thinned on the narrow screen


def test_freeflow_and_page_range(city, browser):
    """?scale=freeflow colours each road by its forecast over its own free-flow reference (the 95th percentile of
    its readings over the last 24 h, nearest rank); ?lo=&hi= set the absolute range."""
    means, _ = forecast(city, "ha")
    since = (datetime.fromisoformat(city["latest"]) - timedelta(hours=24)).isoformat()
    ref = {}
    for node, readings in city["posted"].items():
        v = sorted(x for ts, x in readings if ts >= since)
        assert len(v) >= 12
        ref[node] = v[math.ceil(0.95 * len(v)) - 1]
    assert len(set(ref.values())) > 1  # roads differ: a per-road reference is not a city-wide one
    browser.open(f"{city['url']}/?model=ha&scale=freeflow&step=12&refresh=3600", DRAWN + " && !document"
                 ".getElementById('legend').textContent.includes('loading')")
    got = browser.js(READ_MAP)
    check_colours(got, means, 12, lambda n, v: palette(v / ref[n], 0.3, 1.0))
    assert all(t.endswith("%") for t in got["ticks"])
    assert [float(t[:-1]) for t in got["ticks"]] == pytest.approx([30, 47.5, 65, 82.5, 100], abs=0.51)
    assert "share of each road's free-flow reference (km/h)" in got["legend"]
    assert "95th percentile of its readings in the store over the last 24 h" in got["legend"]
    lo, hi = training_range(city, "ha")
    assert any(palette(v["mean"] / ref[n], 0.3, 1.0) != palette(v["mean"], lo, hi)
               for (n, s), v in means.items() if s == 12)  # not the absolute colours

    browser.open(f"{city['url']}/?model=ha&lo=50&hi=90&refresh=3600", DRAWN)
    got = browser.js(READ_MAP)
    check_colours(got, means, 1, lambda n, v: palette(v, 50, 90))
    assert [float(t) for t in got["ticks"] if t != "km/h"] == [50, 60, 70, 80, 90]
    assert "set by the page" in got["legend"]
    browser.open(f"{city['url']}/?model=ha&lo=90&hi=50&scale=speed&refresh=3600", DRAWN)
    got = browser.js(READ_MAP)
    check_colours(got, means, 1, lambda n, v: palette(v, lo, hi))  # refused: the default range, and a note
    assert "?scale=speed is neither absolute nor freeflow" in got["legend"] and "lo below hi" in got["legend"]
