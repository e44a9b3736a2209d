// stmgt live map: plain JavaScript, no libraries, no network access beyond this service.
// Every text that comes from a run, a city or a client (names, units, node ids, messages) reaches the page
// through textContent or an attribute, never as HTML (no innerHTML): data cannot run script here.
"use strict";
(function () {
  const SVGNS = document.getElementById("map").namespaceURI; // the SVG namespace, taken from the page
  const params = new URLSearchParams(location.search);
  const REFRESH_MS = 1000 * (Number(params.get("refresh")) || 10);
  const state = { models: [], model: null, graph: null, layout: null, forecast: null, selected: null, step: 1 };
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function html(tag, text, parent, cls) { // an HTML element holding text (never markup)
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.setAttribute("class", cls);
    if (parent) parent.appendChild(e);
    return e;
  }

  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }

  function roadsById() { // per-road trust of the current forecast: observed fraction, last reading, status
    const out = {};
    if (state.forecast && state.forecast.roads) for (const r of state.forecast.roads) out[r.node_id] = r;
    return out;
  }

  async function getJSON(path) {
    const r = await fetch(path, { headers: { Accept: "application/json" } });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.detail || r.statusText);
    return body;
  }

  // ---------------------------------------------------------------- layout
  function layoutNodes(graph) {
    const n = graph.nodes.length;
    let pts;
    if (graph.has_coords) {
      const lat0 = graph.nodes.reduce((s, d) => s + d.lat, 0) / n;
      const k = Math.cos((lat0 * Math.PI) / 180);
      pts = graph.nodes.map((d) => [d.lon * k, -d.lat]);
    } else {
      pts = graph.nodes.map((d, i) => [Math.cos((2 * Math.PI * i) / n), Math.sin((2 * Math.PI * i) / n)]);
      if (n <= 400) springs(pts, graph);
    }
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    const s = Math.min(920 / (x1 - x0 || 1), 620 / (y1 - y0 || 1));
    const ox = (1000 - s * (x1 - x0)) / 2, oy = (700 - s * (y1 - y0)) / 2;
    const pos = {};
    graph.nodes.forEach((d, i) => { pos[d.id] = [ox + s * (pts[i][0] - x0), oy + s * (pts[i][1] - y0)]; });
    return pos;
  }

  function springs(pts, graph) { // a small force-directed layout when the graph has no coordinates
    const idx = {}; graph.nodes.forEach((d, i) => { idx[d.id] = i; });
    const n = pts.length, L = 1.5 / Math.sqrt(n);
    for (let it = 0; it < 200; it++) {
      const f = pts.map(() => [0, 0]);
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) {
        const dx = pts[i][0] - pts[j][0], dy = pts[i][1] - pts[j][1], d2 = dx * dx + dy * dy + 1e-6;
        const r = (L * L) / d2;
        f[i][0] += dx * r; f[i][1] += dy * r; f[j][0] -= dx * r; f[j][1] -= dy * r;
      }
      for (const e of graph.edges) {
        const a = idx[e.source], b = idx[e.target];
        const dx = pts[a][0] - pts[b][0], dy = pts[a][1] - pts[b][1], d = Math.sqrt(dx * dx + dy * dy) + 1e-6;
        const r = (d - L) / d * 0.1;
        f[a][0] -= dx * r; f[a][1] -= dy * r; f[b][0] += dx * r; f[b][1] += dy * r;
      }
      const t = 0.1 * (1 - it / 200);
      for (let i = 0; i < n; i++) {
        const m = Math.sqrt(f[i][0] ** 2 + f[i][1] ** 2) + 1e-9, step = Math.min(m, t);
        pts[i][0] += (f[i][0] / m) * step; pts[i][1] += (f[i][1] / m) * step;
      }
    }
  }

  // ---------------------------------------------------------------- colours
  function colour(v, lo, hi) { // low values red, middle yellow, high green (speeds: congested is red)
    if (v === undefined || v === null || isNaN(v)) return "#bbb";
    let t = (v - lo) / (hi - lo || 1); t = Math.max(0, Math.min(1, t));
    const a = [215, 48, 39], b = [254, 224, 139], c = [26, 152, 80];
    const [p, q, u] = t < 0.5 ? [a, b, t * 2] : [b, c, (t - 0.5) * 2];
    return `rgb(${p.map((x, i) => Math.round(x + (q[i] - x) * u)).join(",")})`;
  }

  function meansAt(step) {
    const out = {};
    if (!state.forecast) return out;
    for (const r of state.forecast.forecasts) if (r.step === step) out[r.node_id] = r.mean;
    return out;
  }

  function range() {
    const v = state.forecast ? state.forecast.forecasts.map((r) => r.mean).sort((a, b) => a - b) : [];
    if (!v.length) return [0, 1];
    return [v[Math.floor(0.05 * (v.length - 1))], v[Math.floor(0.95 * (v.length - 1))]];
  }

  // ---------------------------------------------------------------- map
  function drawMap() {
    const svg = $("map");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (!state.graph) return;
    const pos = state.layout, m = meansAt(state.step), [lo, hi] = range(), roads = roadsById();
    for (const e of state.graph.edges) {
      const a = pos[e.source], b = pos[e.target];
      if (!a || !b || e.source === e.target) continue;
      const v = m[e.source] !== undefined && m[e.target] !== undefined ? (m[e.source] + m[e.target]) / 2 : undefined;
      const line = el("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "road", stroke: colour(v, lo, hi) }, svg);
      line.addEventListener("click", () => select(e.target));
      el("title", {}, line).textContent = `${e.source} → ${e.target}: ${v === undefined ? "no forecast" : v.toFixed(1)}`;
    }
    let doubtful = 0;
    for (const d of state.graph.nodes) {
      const p = pos[d.id], road = roads[d.id], status = road ? road.status : "ok";
      if (status !== "ok") doubtful++;
      const c = el("circle", { cx: p[0], cy: p[1], r: 6, fill: colour(m[d.id], lo, hi),
        class: "node" + (d.id === state.selected ? " sel" : "") + (status !== "ok" ? " doubt " + status.replace(" ", "-") : ""),
        "data-status": status }, svg);
      c.addEventListener("click", () => select(d.id));
      let tip = `${d.id}: ${m[d.id] === undefined ? "no forecast" : m[d.id].toFixed(1)}`;
      if (road) {
        tip += ` (${status}; ${Math.round(100 * road.observed_fraction)}% of the window observed, last reading ${road.last_observed_at || "none"}`;
        tip += road.flagged_readings ? `, ${road.flagged_readings} implausible reading(s) ignored)` : ")";
      }
      el("title", {}, c).textContent = tip;
    }
    const units = state.forecast ? state.forecast.units : "";
    const legend = $("legend");
    clear(legend);
    legend.appendChild(document.createTextNode(lo.toFixed(0)));
    html("span", null, legend, "bar");
    legend.appendChild(document.createTextNode(`${hi.toFixed(0)} ${units} (forecast mean at +${state.step})`));
    if (doubtful) html("span", ` · ${doubtful} road(s) forecast from too little or stale data (dashed)`, legend, "doubt-note");
  }

  // ---------------------------------------------------------------- chart
  async function drawChart() {
    const svg = $("chart");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const id = state.selected;
    if (!id || !state.model) return;
    const model = state.models.find((m) => m.name === state.model);
    $("chartTitle").textContent = `${id}: history and forecast (${model.units || "value"})`;
    const fc = state.forecast ? state.forecast.forecasts.filter((r) => r.node_id === id) : [];
    const spanMin = 3 * model.history * model.interval_minutes;
    let since = "";
    if (state.forecast) {
      const end = new Date(state.forecast.window_end + "Z").getTime() - spanMin * 60000;
      since = new Date(end).toISOString().slice(0, 19);
    }
    let obs = [];
    try {
      obs = (await getJSON(`/v1/observations?nodes=${encodeURIComponent(id)}&since=${since}`)).observations;
    } catch (e) { obs = []; }
    const t = (s) => new Date(s + "Z").getTime();
    const pts = obs.map((o) => [t(o.timestamp), o.value]);
    const all = pts.map((p) => p[1]).concat(fc.flatMap((r) => [r.quantiles["0.05"], r.quantiles["0.95"]]));
    const times = pts.map((p) => p[0]).concat(fc.map((r) => t(r.timestamp)));
    if (!times.length) return;
    const W = 520, H = 260, L = 40, R = 10, T = 10, B = 30;
    const t0 = Math.min(...times), t1 = Math.max(...times);
    const y0 = Math.min(...all), y1 = Math.max(...all);
    const X = (v) => L + ((v - t0) / (t1 - t0 || 1)) * (W - L - R);
    const Y = (v) => T + (1 - (v - y0) / (y1 - y0 || 1)) * (H - T - B);
    const band = (lo, hi, fill) => {
      if (!fc.length) return;
      const up = fc.map((r) => `${X(t(r.timestamp))},${Y(r.quantiles[hi])}`);
      const dn = fc.slice().reverse().map((r) => `${X(t(r.timestamp))},${Y(r.quantiles[lo])}`);
      el("polygon", { points: up.concat(dn).join(" "), fill }, svg);
    };
    band("0.05", "0.95", "rgba(21,101,192,.15)");
    band("0.1", "0.9", "rgba(21,101,192,.35)");
    if (fc.length) el("polyline", { points: fc.map((r) => `${X(t(r.timestamp))},${Y(r.mean)}`).join(" "),
      fill: "none", stroke: "#1565c0", "stroke-width": 2 }, svg);
    if (pts.length) el("polyline", { points: pts.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "),
      fill: "none", stroke: "#222", "stroke-width": 1.5 }, svg);
    el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }, svg);
    el("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }, svg);
    const label = (x, y, s, anchor) => { const e = el("text", { x, y, class: "axis", "text-anchor": anchor || "start" }, svg); e.textContent = s; };
    label(L - 4, Y(y1) + 4, y1.toFixed(0), "end");
    label(L - 4, Y(y0), y0.toFixed(0), "end");
    const hm = (v) => new Date(v).toISOString().slice(11, 16);
    label(L, H - B + 14, hm(t0));
    label(W - R, H - B + 14, hm(t1), "end");
    if (state.forecast) {
      const xe = X(t(state.forecast.window_end));
      el("line", { x1: xe, y1: T, x2: xe, y2: H - B, stroke: "#aaa", "stroke-dasharray": "3,3" }, svg);
      label(xe, H - B + 14, "now " + hm(t(state.forecast.window_end)), "middle");
    }
  }

  function select(id) { state.selected = id; drawMap(); drawChart(); }

  // ---------------------------------------------------------------- scores
  async function drawScores() {
    let s;
    try { s = (await getJSON("/v1/scores")).scores; } catch (e) { return; }
    const f = (v, d) => (v === null || v === undefined ? "–" : v.toFixed(d));
    const box = $("scores");
    clear(box);
    const table = html("table", null, box);
    const row = (cells, tag) => { const tr = html("tr", null, table); for (const c of cells) html(tag || "td", c, tr); return tr; };
    row(["model", "version", "forecasts", "pairs", "MAE", "cov 80%", "cov 90%"], "th");
    for (const m of s) row([m.model, m.version, m.forecasts_issued, m.n, f(m.mae, 2), f(m.coverage80, 2), f(m.coverage90, 2)]);
    const cur = s.find((m) => m.model === state.model);
    if (cur && cur.steps.length) {
      html("p", "per horizon step", box);
      const t2 = html("table", null, box);
      for (const [name, key, d] of [["step", "step", null], ["MAE", "mae", 2], ["cov 80%", "coverage80", 2], ["cov 90%", "coverage90", 2]]) {
        const tr = html("tr", null, t2);
        html("th", name, tr);
        for (const r of cur.steps) html("td", d === null ? r[key] : f(r[key], d), tr);
      }
    }
  }

  // ---------------------------------------------------------------- refresh loop
  async function refresh() {
    try {
      const info = await getJSON("/v1/models");
      state.models = info.models;
      const sel = $("model");
      if (!sel.options.length) {
        for (const m of info.models) { const o = document.createElement("option"); o.value = o.textContent = m.name; sel.appendChild(o); }
        state.model = info.default;
        sel.value = state.model;
      }
      const model = info.models.find((m) => m.name === state.model);
      $("version").textContent = `${model.name} ${model.version}${model.calibrated ? " (calibrated)" : ""}`;
      $("latest").textContent = info.store.latest_observation || "none yet";
      $("step").max = model.horizon;
      if (!state.graph || state.graph.model !== model.name) {
        state.graph = await getJSON(`/v1/graph?model=${encodeURIComponent(model.name)}`);
        state.layout = layoutNodes(state.graph);
      }
      try {
        state.forecast = await getJSON(`/v1/forecast?model=${encodeURIComponent(model.name)}`);
        $("message").textContent = "";
      } catch (e) {
        state.forecast = null;
        $("message").textContent = "no forecast yet: " + e.message;
      }
      drawMap();
      await drawChart();
      await drawScores();
      $("refreshed").textContent = new Date().toLocaleTimeString();
    } catch (e) {
      $("message").textContent = "service unreachable: " + e.message;
    }
  }

  $("step").addEventListener("input", (e) => { state.step = Number(e.target.value); $("stepLabel").textContent = "+" + state.step; drawMap(); });
  $("model").addEventListener("change", (e) => { state.model = e.target.value; state.graph = null; refresh(); });
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
