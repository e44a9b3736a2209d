// stmgt live map: plain JavaScript, no libraries, no network access beyond this service.
// Every text that comes from a run, a city or a client (names, units, node ids, messages) reaches the page
// through textContent or an attribute, never as HTML (no innerHTML): data cannot run script here.
//
// Page parameters (docs/serving.md, "The map"):
//   ?scale=absolute (default)  colours over a fixed range of the value, in the data's units: the run's training
//                              mean +- 2 standard deviations (GET /v1/models, training_values), or ?lo=&hi=
//   ?scale=freeflow            colours over each road's forecast as a share of its free-flow reference (the 95th
//                              percentile of its readings in the store over the last 24 h); ?lo=0.3&hi=1 default
//   ?step=N  ?model=NAME  ?road=ID  ?refresh=SECONDS
"use strict";
(function () {
  const SVGNS = document.getElementById("map").namespaceURI; // the SVG namespace, taken from the page
  const params = new URLSearchParams(location.search);
  const REFRESH_MS = 1000 * (Number(params.get("refresh")) || 10);
  const NO_UNITS = "(no units declared)";
  const NO_COLOUR = "#bbb"; // a road without a forecast (or without a free-flow reference)
  const ABS_SD = 2; // the absolute scale's default half-width, in training standard deviations
  const FREEFLOW = { quantile: 0.95, hours: 24, min_readings: 12, lo: 0.3, hi: 1.0, refresh_ms: 10 * 60000 };
  const SILENT = new Set(["no data", "stale"]);

  function numParam(k) { // null when absent, NaN when not a finite number
    const v = params.get(k);
    if (v === null || v.trim() === "") return null;
    const x = Number(v);
    return Number.isFinite(x) ? x : NaN;
  }
  const pageScale = (() => {
    const kind = params.get("scale") || "absolute", lo = numParam("lo"), hi = numParam("hi"), notes = [];
    if (kind !== "absolute" && kind !== "freeflow") notes.push(`?scale=${kind} is neither absolute nor freeflow`);
    const bad = (lo !== null && isNaN(lo)) || (hi !== null && isNaN(hi)) || (lo !== null && hi !== null && !(lo < hi));
    if (bad) notes.push("?lo= and ?hi= must be numbers with lo below hi; the default range is used");
    return { kind: kind === "freeflow" ? "freeflow" : "absolute", lo: bad ? null : lo, hi: bad ? null : hi, notes };
  })();

  const state = { models: [], model: null, graph: null, layout: null, forecast: null, step: numParam("step") || 1,
    selected: params.get("road"), freeflow: null, latest: null };
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  function svgText(parent, x, y, text, attrs) {
    const e = el("text", { x, y, ...(attrs || {}) }, parent);
    e.textContent = String(text);
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

  const currentModel = () => state.models.find((m) => m.name === state.model) || null;
  const unitsLabel = () => {
    const u = state.forecast ? state.forecast.units : (currentModel() || {}).units;
    return u ? String(u) : NO_UNITS;
  };
  const isoMinutes = (ms) => new Date(ms).toISOString().slice(0, 19); // naive ISO: the store reads it as UTC
  // a time of the API (the data's clock, UTC) in milliseconds, written naive or with a Z or an offset
  const timeOf = (s) => new Date(/(Z|[+-]\d\d:?\d\d)$/i.test(s) ? s : s + "Z").getTime();

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

  // ---------------------------------------------------------------- colours and the fixed scale
  // Red (low: congested, for speeds) through yellow to green (high), linear between five stops (ColorBrewer RdYlGn).
  const STOPS = [[215, 48, 39], [252, 141, 89], [254, 224, 139], [145, 207, 96], [26, 152, 80]];
  function colourAt(t) { // t in [0, 1] (clamped)
    t = Math.max(0, Math.min(1, t));
    const k = Math.min(STOPS.length - 2, Math.floor(t * (STOPS.length - 1)));
    const u = t * (STOPS.length - 1) - k, a = STOPS[k], b = STOPS[k + 1];
    return `rgb(${a.map((x, i) => Math.round(x + (b[i] - x) * u)).join(",")})`;
  }
  function colour(v, lo, hi) {
    if (v === undefined || v === null || !Number.isFinite(v)) return NO_COLOUR;
    return colourAt((v - lo) / (hi - lo));
  }

  function decimals(span) { return span >= 50 ? 0 : span >= 5 ? 1 : span >= 0.5 ? 2 : 3; }

  // The scale of the map: {kind, lo, hi, value(node, mean), tick(v), title, source}. It depends on the model and
  // on the page's parameters only, never on the forecasts on screen: the same value has the same colour at every
  // horizon and at every refresh.
  function currentScale() {
    const model = currentModel();
    if (!model) return null;
    const units = unitsLabel(), tv = model.training_values;
    if (pageScale.kind === "freeflow") {
      const ff = state.freeflow && state.freeflow.model === model.name ? state.freeflow : null;
      const lo = pageScale.lo !== null ? pageScale.lo : FREEFLOW.lo, hi = pageScale.hi !== null ? pageScale.hi : FREEFLOW.hi;
      const d = Math.max(0, decimals(100 * (hi - lo)) - 1);
      return { kind: "freeflow", lo, hi,
        value: (id, mean) => (ff && ff.ref[id] > 0 && Number.isFinite(mean) ? mean / ff.ref[id] : undefined),
        tick: (v) => `${(100 * v).toFixed(d)}%`,
        title: `forecast mean at +${state.step} as a share of each road's free-flow reference (${units})`,
        source: !ff ? "free-flow references: loading the last 24 h of readings..." :
          `free flow: each road's ${Math.round(100 * FREEFLOW.quantile)}th percentile of its readings in the store over` +
          ` the last ${FREEFLOW.hours} h` + (ff.fallback ? `; ${ff.fallback} road(s) with fewer than` +
          ` ${FREEFLOW.min_readings} readings use the city-wide one (${ff.city === null ? "none" : ff.city.toFixed(1)})` : "") };
    }
    let lo = pageScale.lo, hi = pageScale.hi, source;
    if (tv && Number.isFinite(tv.mean) && Number.isFinite(tv.std)) {
      const half = ABS_SD * Math.max(tv.std, 1e-6 * Math.max(1, Math.abs(tv.mean)));
      if (lo === null) lo = tv.mean - half;
      if (hi === null) hi = tv.mean + half;
      source = pageScale.lo === null && pageScale.hi === null ?
        `fixed scale: the training mean ± ${ABS_SD} sd (${tv.mean.toFixed(decimals(half))} ± ` +
        `${half.toFixed(decimals(half))} ${units})` : "fixed scale set by the page (?lo=, ?hi=)";
    } else if (lo === null || hi === null) { // a service without training_values: the first forecast's range, kept
      if (!state.fallbackRange || state.fallbackRange.model !== model.name) {
        if (!state.forecast || !state.forecast.forecasts.length) return null;
        const v = state.forecast.forecasts.map((r) => r.mean);
        state.fallbackRange = { model: model.name, lo: Math.min(...v), hi: Math.max(...v) };
      }
      lo = lo === null ? state.fallbackRange.lo : lo;
      hi = hi === null ? state.fallbackRange.hi : hi;
      if (!(hi > lo)) { const d = Math.max(1, Math.abs(lo) * 0.1); lo -= d; hi += d; }
      source = "fixed scale: the range of the first forecast seen (this service does not say its training range)";
    } else source = "fixed scale set by the page (?lo=, ?hi=)";
    if (!(hi > lo)) hi = lo + 1;
    const d = decimals(hi - lo);
    return { kind: "absolute", lo, hi, value: (id, mean) => mean, tick: (v) => v.toFixed(d),
      title: `forecast mean at +${state.step}, ${units}`, source };
  }

  function quantileOf(sorted, q) { // nearest rank
    return sorted.length ? sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] : null;
  }

  async function loadFreeflow(model) {
    // Each road's free-flow reference: the 95th percentile of its unflagged readings in the store over the 24 h
    // before the newest observation (the run folder holds no per-road statistic); roads with fewer than 12
    // readings there take the city-wide 95th percentile, and with no readings at all the training mean + 2 sd.
    const end = state.latest ? timeOf(state.latest) : null;
    const since = end === null ? "" : isoMinutes(end - FREEFLOW.hours * 3600000);
    const body = await getJSON(`/v1/observations?since=${since}&limit=100000`);
    const by = {}, all = [];
    for (const o of body.observations) {
      if (o.flagged || !Number.isFinite(o.value)) continue;
      (by[o.node_id] = by[o.node_id] || []).push(o.value);
      all.push(o.value);
    }
    all.sort((a, b) => a - b);
    const tv = model.training_values;
    let city = quantileOf(all, FREEFLOW.quantile);
    if (city === null && tv) city = tv.mean + ABS_SD * tv.std;
    const ref = {};
    let fallback = 0;
    for (const d of state.graph.nodes) {
      const v = (by[d.id] || []).sort((a, b) => a - b);
      if (v.length >= FREEFLOW.min_readings) ref[d.id] = quantileOf(v, FREEFLOW.quantile);
      else { ref[d.id] = city; fallback++; }
    }
    state.freeflow = { model: model.name, ref, city, fallback, at: Date.now(), truncated: body.truncated };
  }

  function meansAt(step) {
    const out = {};
    if (!state.forecast) return out;
    for (const r of state.forecast.forecasts) if (r.step === step) out[r.node_id] = r.mean;
    return out;
  }

  // ---------------------------------------------------------------- map
  function fmtValue(v) { return v === undefined || v === null || !Number.isFinite(v) ? "no forecast" : v.toFixed(1); }

  function describeRoad(id, m, sc, road) {
    const units = unitsLabel(), v = m[id];
    let s = `${id}: ${fmtValue(v)}${Number.isFinite(v) && units !== NO_UNITS ? " " + units : ""} at +${state.step}`;
    if (sc && sc.kind === "freeflow") {
      const f = sc.value(id, v);
      s += f === undefined ? " (no free-flow reference)" : ` (${Math.round(100 * f)}% of free flow ${state.freeflow.ref[id].toFixed(1)})`;
    }
    if (road) {
      s += ` · ${road.status}; ${Math.round(100 * road.observed_fraction)}% of the window observed, last reading ${road.last_observed_at || "none"}`;
      if (road.flagged_readings) s += `; ${road.flagged_readings} implausible reading(s) ignored`;
    }
    return s;
  }

  function hover(text) { const h = $("hover"); if (h) h.textContent = text || ""; }

  function drawMap() {
    const svg = $("map");
    clear(svg);
    const sc = currentScale();
    drawLegend(sc);
    if (!state.graph) return;
    const pos = state.layout, m = meansAt(state.step), roads = roadsById();
    const fill = (id) => (sc ? colour(sc.value(id, m[id]), sc.lo, sc.hi) : NO_COLOUR);
    const statusOf = (id) => (roads[id] ? roads[id].status : "ok");
    const edges = el("g", { class: "edges" }, svg), nodes = el("g", { class: "nodes" }, svg);
    const directed = new Set(state.graph.edges.map((e) => `${e.source}\u0000${e.target}`));
    // straight sensor-to-sensor lines (the city supplies no road geometry), one per edge of /v1/graph, coloured by
    // the forecast of the road the edge leads to; an edge whose reverse is also there is drawn beside it (offset
    // to the right of its direction) so that both directions show.
    for (const e of state.graph.edges) {
      const a = pos[e.source], b = pos[e.target];
      if (!a || !b || e.source === e.target) continue;
      let [x1, y1, x2, y2] = [a[0], a[1], b[0], b[1]];
      if (directed.has(`${e.target}\u0000${e.source}`)) {
        const dx = x2 - x1, dy = y2 - y1, len = Math.hypot(dx, dy) || 1, o = 2.5;
        x1 -= (dy / len) * o; x2 -= (dy / len) * o; y1 += (dx / len) * o; y2 += (dx / len) * o;
      }
      const st = statusOf(e.target), silent = SILENT.has(st);
      const line = el("line", { x1: x1.toFixed(1), y1: y1.toFixed(1), x2: x2.toFixed(1), y2: y2.toFixed(1),
        class: "road" + (silent ? " silent" : ""), stroke: fill(e.target), "data-source": e.source,
        "data-target": e.target }, edges);
      const tip = `${e.source} → ${e.target}, coloured by ${describeRoad(e.target, m, sc, roads[e.target])}`;
      el("title", {}, line).textContent = tip;
      line.addEventListener("click", () => select(e.target));
      line.addEventListener("mouseenter", () => hover(tip));
      line.addEventListener("mouseleave", () => hover(""));
    }
    for (const d of state.graph.nodes) {
      const p = pos[d.id], road = roads[d.id], status = statusOf(d.id);
      const flagged = road ? road.flagged_readings || 0 : 0;
      const g = el("g", { class: "road-marker", "data-node": d.id }, nodes);
      const tip = describeRoad(d.id, m, sc, road);
      el("title", {}, g).textContent = tip; // the group's tooltip (its first child): id, value, status
      if (flagged) el("circle", { cx: p[0].toFixed(1), cy: p[1].toFixed(1), r: 10.5, class: "flag-ring" }, g);
      const cls = "node" + (d.id === state.selected ? " sel" : "") + (SILENT.has(status) ? " silent" : "") +
        (status === "sparse" ? " doubt sparse" : "") + (flagged ? " flagged" : "");
      const c = el("circle", { cx: p[0].toFixed(1), cy: p[1].toFixed(1), r: 6, fill: fill(d.id), class: cls,
        "data-node": d.id, "data-status": status, "data-flagged": flagged,
        "data-value": Number.isFinite(m[d.id]) ? m[d.id] : "" }, g);
      c.addEventListener("click", () => select(d.id));
      c.addEventListener("mouseenter", () => hover(tip));
      c.addEventListener("mouseleave", () => hover(""));
    }
  }

  function drawLegend(sc) {
    const box = $("legend");
    clear(box);
    const roads = state.forecast ? state.forecast.roads || [] : [];
    if (!sc) {
      html("div", `no forecast yet: roads are coloured by the forecast mean (${unitsLabel()}) once there is one`, box, "lg-title");
      return;
    }
    html("div", sc.title, box, "lg-title");
    const unitsText = sc.kind === "freeflow" || unitsLabel() === NO_UNITS ? "" : unitsLabel().slice(0, 40);
    const x0 = 12, x1 = 272, W = x1 + 14 + 7 * unitsText.length, H = 30, bar = el("svg", { class: "lg-bar", width: W, height: H,
      viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "colour scale" }, box);
    const n = 60;
    for (let i = 0; i < n; i++) {
      el("rect", { x: (x0 + ((x1 - x0) * i) / n).toFixed(2), y: 2, width: ((x1 - x0) / n + 0.3).toFixed(2), height: 10,
        fill: colourAt((i + 0.5) / n) }, bar);
    }
    for (let k = 0; k <= 4; k++) {
      const v = sc.lo + ((sc.hi - sc.lo) * k) / 4, x = x0 + ((x1 - x0) * k) / 4;
      el("line", { x1: x, y1: 12, x2: x, y2: 16, stroke: "#555" }, bar);
      svgText(bar, x, 27, sc.tick(v), { class: "lg-tick", "text-anchor": "middle", "data-value": v });
    }
    if (unitsText) svgText(bar, x1 + 6, 11, unitsText, { class: "lg-tick lg-units" });
    html("div", sc.source + "; forecasts beyond the range take its end colours", box, "lg-note");
    for (const note of pageScale.notes) html("div", note, box, "lg-warn");
    const keys = html("div", null, box, "lg-keys");
    const key = (cls, text, count) => {
      const item = html("span", null, keys, "lg-key");
      const s = el("svg", { width: 24, height: 24, viewBox: "0 0 24 24" }, item);
      if (cls === "flagged") el("circle", { cx: 12, cy: 12, r: 10.5, class: "flag-ring" }, s);
      el("circle", { cx: 12, cy: 12, r: 6, fill: cls === "nofc" ? NO_COLOUR : colourAt(0.75),
        class: "node" + (cls === "silent" ? " silent" : cls === "sparse" ? " doubt sparse" : "") }, s);
      html("span", `${text}${count === undefined ? "" : " (" + count + ")"}`, item);
    };
    key("ok", "observed road");
    key("silent", "silent: no reading in the last 3 steps, forecast from its neighbours (dashed)",
      roads.filter((r) => SILENT.has(r.status)).length);
    key("sparse", "sparse: under half of the window observed", roads.filter((r) => r.status === "sparse").length);
    key("flagged", "flagged: implausible readings ignored", roads.filter((r) => r.flagged_readings > 0).length);
    if (sc.kind === "freeflow" || state.graph && state.graph.nodes.some((d) => !Number.isFinite(meansAt(state.step)[d.id]))) {
      key("nofc", sc.kind === "freeflow" ? "no forecast or no free-flow reference" : "no forecast");
    }
  }

  // ---------------------------------------------------------------- chart
  function niceTicks(a, b, n) { // about n round values covering [a, b]
    if (!(b > a)) { const d = Math.max(Math.abs(a) * 0.05, 1e-6) || 1; a -= d; b += d; }
    const raw = (b - a) / Math.max(1, n - 1), mag = 10 ** Math.floor(Math.log10(raw)), f = raw / mag;
    const step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
    const out = [];
    for (let v = Math.floor(a / step) * step; v <= b + step * 0.999; v += step) out.push(Number(v.toFixed(10)));
    if (out[out.length - 1] < b) out.push(Number((out[out.length - 1] + step).toFixed(10)));
    return { ticks: out, step };
  }

  const TIME_STEPS_MIN = [1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 240, 360, 720, 1440, 2880, 10080];

  async function drawChart() {
    const svg = $("chart");
    clear(svg);
    const id = state.selected;
    const model = currentModel();
    if (!id || !model) return;
    const units = unitsLabel();
    $("chartTitle").textContent = `${id}: history and forecast (${units})`;
    const fc = state.forecast ? state.forecast.forecasts.filter((r) => r.node_id === id) : [];
    const spanMin = 3 * model.history * model.interval_minutes;
    let since = "";
    if (state.forecast) since = isoMinutes(timeOf(state.forecast.window_end) - spanMin * 60000);
    let obs = [];
    try {
      obs = (await getJSON(`/v1/observations?nodes=${encodeURIComponent(JSON.stringify([id]))}&since=${since}`)).observations;
    } catch (e) { obs = []; }
    if (state.selected !== id) return; // another road was clicked meanwhile
    clear(svg);
    const t = timeOf;
    const pts = obs.filter((o) => !o.flagged).map((o) => [t(o.timestamp), o.value]);
    const all = pts.map((p) => p[1]).concat(fc.flatMap((r) => [r.quantiles["0.05"], r.quantiles["0.95"], r.mean]))
      .filter(Number.isFinite);
    const times = pts.map((p) => p[0]).concat(fc.map((r) => t(r.timestamp)));
    if (!times.length || !all.length) return;
    const W = Math.max(320, Math.round(svg.clientWidth || 520)), H = 260, L = 56, R = 14, T = 22, B = 30;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const t0 = Math.min(...times), t1 = Math.max(...times);
    const yt = niceTicks(Math.min(...all), Math.max(...all), 6);
    const y0 = yt.ticks[0], y1 = yt.ticks[yt.ticks.length - 1];
    const X = (v) => L + ((v - t0) / (t1 - t0 || 1)) * (W - L - R);
    const Y = (v) => T + (1 - (v - y0) / (y1 - y0 || 1)) * (H - T - B);
    const grid = el("g", { class: "grid" }, svg);
    let yd = 0; // the fewest decimals that write every tick exactly
    while (yd < 6 && yt.ticks.some((v) => Math.abs(Number(v.toFixed(yd)) - v) > yt.step * 1e-6)) yd++;
    for (const v of yt.ticks) {
      el("line", { x1: L, y1: Y(v).toFixed(1), x2: W - R, y2: Y(v).toFixed(1), class: "gridline" }, grid);
      svgText(svg, L - 5, (Y(v) + 3.5).toFixed(1), v.toFixed(yd), { class: "axis tick-y", "text-anchor": "end",
        "data-value": v });
    }
    svgText(svg, 12, T + (H - T - B) / 2, units, { class: "axis axis-title", "text-anchor": "middle",
      transform: `rotate(-90 12 ${T + (H - T - B) / 2})` });
    // time ticks at a round interval, the smallest whose labels do not touch at this width
    const probe = svgText(svg, -100, -100, "00:00", { class: "axis tick-x" });
    const measured = typeof probe.getComputedTextLength === "function" ? probe.getComputedTextLength() : 0;
    svg.removeChild(probe);
    const pxPerMin = (W - L - R) / Math.max(1, (t1 - t0) / 60000);
    const labelDay = (t1 - t0) > 2 * 86400000;
    const labelW = (measured || 31) * (labelDay ? 11 / 5 : 1) + 10;
    const stepMin = TIME_STEPS_MIN.find((s) => s * pxPerMin >= labelW) || TIME_STEPS_MIN[TIME_STEPS_MIN.length - 1];
    const hm = (v) => { const s = new Date(v).toISOString(); return labelDay ? `${s.slice(5, 10)} ${s.slice(11, 16)}` : s.slice(11, 16); };
    for (let v = Math.ceil(t0 / (stepMin * 60000)) * stepMin * 60000; v <= t1; v += stepMin * 60000) {
      if (X(v) - labelW / 2 + 5 < 0 || X(v) + labelW / 2 - 5 > W) continue; // a label would leave the chart
      el("line", { x1: X(v).toFixed(1), y1: T, x2: X(v).toFixed(1), y2: H - B, class: "gridline" }, grid);
      svgText(svg, X(v).toFixed(1), H - B + 14, hm(v), { class: "axis tick-x", "text-anchor": "middle",
        "data-time": new Date(v).toISOString().slice(0, 19) });
    }
    const band = (lo, hi, fill) => {
      if (!fc.length) return;
      const up = fc.map((r) => `${X(t(r.timestamp)).toFixed(1)},${Y(r.quantiles[hi]).toFixed(1)}`);
      const dn = fc.slice().reverse().map((r) => `${X(t(r.timestamp)).toFixed(1)},${Y(r.quantiles[lo]).toFixed(1)}`);
      el("polygon", { points: up.concat(dn).join(" "), fill }, svg);
    };
    band("0.05", "0.95", "rgba(21,101,192,.15)");
    band("0.1", "0.9", "rgba(21,101,192,.35)");
    if (fc.length) el("polyline", { points: fc.map((r) => `${X(t(r.timestamp)).toFixed(1)},${Y(r.mean).toFixed(1)}`).join(" "),
      fill: "none", stroke: "#1565c0", "stroke-width": 2 }, svg);
    if (pts.length) el("polyline", { points: pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" "),
      fill: "none", stroke: "#222", "stroke-width": 1.5 }, svg);
    el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#999" }, svg);
    el("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#999" }, svg);
    if (state.forecast) {
      const xe = X(t(state.forecast.window_end));
      el("line", { x1: xe.toFixed(1), y1: T, x2: xe.toFixed(1), y2: H - B, stroke: "#888", "stroke-dasharray": "3,3" }, svg);
      svgText(svg, xe.toFixed(1), T - 6, "now " + new Date(t(state.forecast.window_end)).toISOString().slice(11, 16),
        { class: "axis now", "text-anchor": "middle" });
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
  function setStep(step) {
    const model = currentModel();
    const max = model ? model.horizon : 12;
    state.step = Math.max(1, Math.min(max, Math.round(step) || 1));
    $("step").value = String(state.step);
    const minutes = model ? state.step * model.interval_minutes : null;
    $("stepLabel").textContent = `+${state.step}` + (minutes ? ` (${minutes >= 120 ? (minutes / 60).toFixed(1) + " h" : minutes + " min"})` : "");
  }

  async function refresh() {
    try {
      const info = await getJSON("/v1/models");
      state.models = info.models;
      state.latest = info.store.latest_observation;
      const sel = $("model");
      if (!sel.options.length) {
        for (const m of info.models) { const o = document.createElement("option"); o.value = o.textContent = m.name; sel.appendChild(o); }
        const wanted = params.get("model");
        state.model = info.models.some((m) => m.name === wanted) ? wanted : info.default;
        sel.value = state.model;
      }
      const model = currentModel();
      $("version").textContent = `${model.name} ${model.version}${model.calibrated ? " (calibrated)" : ""}`;
      $("latest").textContent = info.store.latest_observation || "none yet";
      $("step").max = model.horizon;
      setStep(state.step);
      if (!state.graph || state.graph.model !== model.name) {
        state.graph = await getJSON(`/v1/graph?model=${encodeURIComponent(model.name)}`);
        state.layout = layoutNodes(state.graph);
        if (state.selected && !state.graph.nodes.some((d) => d.id === state.selected)) state.selected = null;
      }
      try {
        state.forecast = await getJSON(`/v1/forecast?model=${encodeURIComponent(model.name)}`);
        $("message").textContent = "";
      } catch (e) {
        state.forecast = null;
        $("message").textContent = "no forecast yet: " + e.message;
      }
      if (pageScale.kind === "freeflow" && (!state.freeflow || state.freeflow.model !== model.name ||
          Date.now() - state.freeflow.at > FREEFLOW.refresh_ms || state.freeflow.city === null)) {
        try { await loadFreeflow(model); } catch (e) { state.freeflow = null; }
      }
      drawMap();
      await drawChart();
      await drawScores();
      $("refreshed").textContent = new Date().toLocaleTimeString();
    } catch (e) {
      $("message").textContent = "service unreachable: " + e.message;
    }
  }

  $("step").addEventListener("input", (e) => { setStep(Number(e.target.value)); drawMap(); });
  $("model").addEventListener("change", (e) => { state.model = e.target.value; state.graph = null; refresh(); });
  if (typeof window !== "undefined" && window.addEventListener) {
    let pending = null;
    window.addEventListener("resize", () => { clearTimeout(pending); pending = setTimeout(drawChart, 200); });
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
