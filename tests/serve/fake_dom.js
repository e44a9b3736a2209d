// Runs the dashboard's app.js in node against a live `stmgt serve` with a minimal DOM stand-in,
// clicks a sensor and moves the horizon slider, and prints what was drawn as one JSON line.
// usage: node fake_dom.js APP_JS BASE_URL
"use strict";
const [appJs, BASE] = process.argv.slice(2);
const htmlWrites = []; // every assignment to innerHTML (the dashboard must make none: data is text, never markup)
class El {
  constructor(tag) {
    Object.assign(this, { tag, children: [], attrs: {}, listeners: {}, textContent: "", options: [], value: "" });
    this.namespaceURI = "svg";
  }
  set innerHTML(v) { htmlWrites.push(String(v)); }
  get innerHTML() { return serialize(this, true); }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  appendChild(c) { this.children.push(c); if (this.tag === "select") this.options.push(c); return c; }
  removeChild(c) { this.children = this.children.filter((x) => x !== c); }
  get firstChild() { return this.children[0]; }
  addEventListener(ev, f) { this.listeners[ev] = f; }
}
const esc = (t) => String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
function serialize(e, inner) { // the markup a browser would show for what was built: texts escaped
  if (e.tag === "#text") return esc(e.textContent);
  const body = e.children.length ? e.children.map((c) => serialize(c)).join("") : esc(e.textContent);
  if (inner) return body;
  const attrs = Object.entries(e.attrs).map(([k, v]) => ` ${k}="${esc(v).replace(/"/g, "&quot;")}"`).join("");
  return `<${e.tag}${attrs}>${body}</${e.tag}>`;
}
const ids = ["map", "legend", "hover", "message", "chartTitle", "chart", "scores", "model", "step", "stepLabel", "latest",
  "version", "refreshed"];
const els = Object.fromEntries(ids.map((id) => [id, new El(id === "model" ? "select" : "div")]));
global.document = { getElementById: (id) => els[id], createElementNS: (ns, t) => new El(t), createElement: (t) => new El(t),
  createTextNode: (t) => Object.assign(new El("#text"), { textContent: String(t) }) };
global.location = { search: "" };
const realFetch = fetch;
const fetched = [];
global.fetch = (p, o) => { fetched.push(p); return realFetch(BASE + p, o); };
global.setInterval = () => 0;
require(appJs);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  for (let i = 0; i < 100 && !els.refreshed.textContent; i++) await sleep(200);
  const all = (e) => [e, ...e.children.flatMap(all)]; // an element and its descendants, in document order
  const has = (c, cls) => (c.attrs.class || "").split(" ").includes(cls);
  const markers = () => all(els.map).filter((c) => c.tag === "circle" && has(c, "node"));
  const fills = () => markers().map((c) => c.attrs.fill);
  const lines = () => all(els.map).filter((c) => c.tag === "line" && has(c, "road"))
    .map((c) => ({ source: c.attrs["data-source"], target: c.attrs["data-target"], stroke: c.attrs.stroke }));
  const legend = () => ({ text: all(els.legend).map((c) => (c.children.length ? "" : c.textContent)).join(" "),
    ticks: all(els.legend).filter((c) => has(c, "lg-tick") && !has(c, "lg-units")).map((c) => c.textContent) });
  const out = { message: els.message.textContent, latest: els.latest.textContent, version: els.version.textContent,
    circles: fills().length, roads: lines().length, fills1: fills(), lines1: lines(), legend1: legend(),
    nodes: markers().map((c) => c.attrs["data-node"]) };
  markers()[1].listeners.click();
  for (let i = 0; i < 50 && !els.chart.children.length; i++) await sleep(100);
  await sleep(300);
  out.chartTitle = els.chartTitle.textContent;
  out.chart = els.chart.children.map((c) => c.tag);
  els.step.listeners.input({ target: { value: "12" } });
  out.fills12 = fills();
  out.lines12 = lines();
  out.legend12 = legend();
  out.scores = els.scores.innerHTML;
  out.fetched = fetched;
  out.htmlWrites = htmlWrites;
  out.page = ids.map((id) => serialize(els[id])).join("\n");
  out.statuses = markers().map((c) => c.attrs["data-status"]);
  console.log(JSON.stringify(out));
  process.exit(0);
})();
