// segstream live dashboard: one snapshot per second over server-sent events (/events), drawn by
// hand into inline SVG. No library, no build step, nothing loaded from anywhere but this server.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
// Okabe-Ito and Tableau hues, distinguishable with common colour-vision deficiencies.
const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0c808",
  "#6a4c93", "#8c564b", "#7f7f7f", "#17becf", "#bcbd22"];
const REASONS = { order: "#0072b2", return: "#d55e00", clicks: "#56b4e9",
  recency_decay: "#e69f00", model_update: "#6a4c93" };
const segmentColours = new Map();
const numberFmt = new Intl.NumberFormat("en");
let last = null;

// ---- helpers -----------------------------------------------------------------------------------
function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(n, digits) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  if (digits !== undefined) return n.toFixed(digits);
  return numberFmt.format(Math.round(n));
}

function compact(n) {
  const a = Math.abs(n);
  if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e3) return (n / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

function clock(ms, seconds) {
  const d = new Date(ms);
  const p = (x) => String(x).padStart(2, "0");
  return p(d.getHours()) + ":" + p(d.getMinutes()) + (seconds ? ":" + p(d.getSeconds()) : "");
}

function niceTicks(max, count, integer) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  if (integer) step = Math.max(1, Math.round(step));
  const ticks = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) ticks.push(+v.toFixed(10));
  if (ticks[ticks.length - 1] < max) ticks.push(+(ticks[ticks.length - 1] + step).toFixed(10));
  return ticks;
}

function colourOf(name) {
  if (!segmentColours.has(name)) {
    segmentColours.set(name, PALETTE[segmentColours.size % PALETTE.length]);
  }
  return segmentColours.get(name);
}

function short(name, max) {
  return name.length > max ? name.slice(0, max - 1) + "…" : name;
}

// A cleared chart of the element's own pixel size: {svg, w, h}.
function canvas(id) {
  const svg = document.getElementById(id);
  const box = svg.getBoundingClientRect();
  const w = Math.max(120, Math.floor(box.width));
  const h = Math.max(80, Math.floor(box.height));
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  return { svg, w, h };
}

function empty(c, text) {
  c.svg.appendChild(el("text", { x: c.w / 2, y: c.h / 2, "text-anchor": "middle",
    class: "empty" }, text));
}

function legend(id, items) {
  const box = document.getElementById(id);
  box.replaceChildren();
  for (const [colour, label] of items) {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = colour;
    span.append(swatch, label);
    box.appendChild(span);
  }
}

function readout(id, text) {
  document.getElementById(id).textContent = text;
}

// Axes of a plot area: y ticks with grid lines and labels; x labels given by the caller.
function yAxis(c, area, ticks, yOf, title) {
  const grid = el("g", { class: "grid" });
  const axis = el("g", { class: "axis" });
  for (const t of ticks) {
    const y = yOf(t);
    grid.appendChild(el("line", { x1: area.x0, x2: area.x1, y1: y, y2: y }));
    axis.appendChild(el("text", { x: area.x0 - 4, y: y + 3.5, "text-anchor": "end" }, compact(t)));
  }
  axis.appendChild(el("line", { x1: area.x0, x2: area.x0, y1: area.y0, y2: area.y1 }));
  axis.appendChild(el("line", { x1: area.x0, x2: area.x1, y1: area.y1, y2: area.y1 }));
  if (title) {
    axis.appendChild(el("text", { x: 2, y: area.y0 - 5, class: "label" }, title));
  }
  c.svg.append(grid, axis);
}

function xTimeLabels(c, area, t0, t1, xOf, seconds) {
  const g = el("g", { class: "axis" });
  const spanS = Math.floor((t1 - t0) / 1000);
  const n = Math.max(2, Math.min(6, Math.floor((area.x1 - area.x0) / 70), spanS + 1));
  for (let i = 0; i < n; i++) {
    const t = t0 + ((t1 - t0) * i) / (n - 1);
    const anchor = i === 0 ? "start" : i === n - 1 ? "end" : "middle";
    g.appendChild(el("text", { x: xOf(t), y: area.y1 + 13, "text-anchor": anchor },
      clock(t, seconds)));
  }
  c.svg.appendChild(g);
}

// ---- charts ------------------------------------------------------------------------------------
// Lines over time; series: [{name, colour, values}] aligned with times (null = gap).
function timeLines(id, times, series, yTitle, options) {
  const c = canvas(id);
  const area = { x0: 42, x1: c.w - 8, y0: 16, y1: c.h - 18 };
  const points = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  if (times.length < 2 || points.length === 0) {
    yAxis(c, area, [0, 1], (v) => area.y1 - v * (area.y1 - area.y0), yTitle);
    empty(c, "waiting for data…");
    return;
  }
  const t0 = times[0];
  const t1 = Math.max(times[times.length - 1], t0 + 1000);
  const opts = options || {};
  const ticks = niceTicks(Math.max(...points, opts.minMax || 0), 4, opts.integer);
  const top = ticks[ticks.length - 1] || 1;
  const xOf = (t) => area.x0 + ((t - t0) / (t1 - t0)) * (area.x1 - area.x0);
  const yOf = (v) => area.y1 - (v / top) * (area.y1 - area.y0);
  yAxis(c, area, ticks, yOf, yTitle);
  xTimeLabels(c, area, t0, t1, xOf, true);
  for (const s of series) {
    let d = "";
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += (pen ? "L" : "M") + xOf(times[i]).toFixed(1) + "," + yOf(v).toFixed(1);
      pen = true;
    });
    if (opts.area && series.length === 1) {
      const first = s.values.findIndex((v) => v !== null && v !== undefined);
      let lastIndex = s.values.length - 1;
      while (lastIndex > 0 && (s.values[lastIndex] === null || s.values[lastIndex] === undefined)) {
        lastIndex--;
      }
      if (first >= 0 && !d.slice(1).includes("M")) {
        const fill = d + `L${xOf(times[lastIndex]).toFixed(1)},${area.y1}` +
          `L${xOf(times[first]).toFixed(1)},${area.y1}Z`;
        c.svg.appendChild(el("path", { d: fill, fill: s.colour, opacity: 0.12, class: "mark" }));
      }
    }
    c.svg.appendChild(el("path", { d, fill: "none", stroke: s.colour, "stroke-width": 2,
      "stroke-linejoin": "round", class: "mark", "data-series": s.name }));
  }
}

function drawSizes(snap) {
  const history = snap.sizes.history;
  const names = Object.keys(history.series);
  const current = snap.sizes.current;
  names.sort().forEach(colourOf);
  const series = names.map((n) => ({ name: n, colour: colourOf(n), values: history.series[n] }));
  timeLines("c-sizes", history.t, series, "customers", { integer: true });
  const ranked = Object.entries(current).sort((a, b) => b[1] - a[1]);
  legend("l-sizes", ranked.map(([n, v]) => [colourOf(n), `${n} ${fmt(v)}`]));
  readout("r-sizes", snap.sizes.started
    ? `${fmt(snap.sizes.total)} customers · ${ranked.length} segments` : "reading the state…");
}

function drawChanges(snap) {
  const c = canvas("c-changes");
  const all = snap.changes.per_minute;
  const firstUsed = all.findIndex((m) => Object.keys(m.counts).length > 0);
  const from = firstUsed < 0 ? all.length - 10 : Math.min(firstUsed, all.length - 10);
  const minutes = all.slice(Math.max(0, from));
  const area = { x0: 42, x1: c.w - 6, y0: 16, y1: c.h - 18 };
  const reasons = Object.keys(REASONS).filter((r) =>
    minutes.some((m) => m.counts[r]) || snap.changes.by_reason[r]);
  for (const m of minutes) {
    for (const r of Object.keys(m.counts)) if (!reasons.includes(r)) reasons.push(r);
  }
  const totals = minutes.map((m) => Object.values(m.counts).reduce((a, b) => a + b, 0));
  const ticks = niceTicks(Math.max(1, ...totals), 4, true);
  const top = ticks[ticks.length - 1];
  const yOf = (v) => area.y1 - (v / top) * (area.y1 - area.y0);
  yAxis(c, area, ticks, yOf, "changes/min");
  const slot = (area.x1 - area.x0) / minutes.length;
  const bar = Math.max(1, slot * 0.78);
  const g = el("g");
  minutes.forEach((m, i) => {
    let base = 0;
    const x = area.x0 + i * slot + (slot - bar) / 2;
    for (const r of reasons) {
      const n = m.counts[r] || 0;
      if (!n) continue;
      const y = yOf(base + n);
      g.appendChild(el("rect", { x: x.toFixed(1), y: y.toFixed(1), width: bar.toFixed(1),
        height: (yOf(base) - y).toFixed(1), fill: REASONS[r] || "#999", class: "mark" },
      ));
      base += n;
    }
    // every minute gets an (invisible when empty) slot, so the axis reads as time
    g.appendChild(el("rect", { x: x.toFixed(1), y: area.y1 - 1, width: bar.toFixed(1),
      height: 1, fill: "#dde1ea", class: "mark slot" }));
  });
  c.svg.appendChild(g);
  const labels = el("g", { class: "axis" });
  const every = Math.max(1, Math.ceil(minutes.length / Math.max(2, Math.floor((area.x1 - area.x0)
    / 48))));
  minutes.forEach((m, i) => {
    if ((minutes.length - 1 - i) % every !== 0) return;
    const anchor = i === minutes.length - 1 ? "end" : "middle";
    const x = anchor === "end" ? area.x0 + (i + 1) * slot : area.x0 + i * slot + slot / 2;
    labels.appendChild(el("text", { x, y: area.y1 + 13, "text-anchor": anchor },
      clock(m.t, false)));
  });
  c.svg.appendChild(labels);
  legend("l-changes", [["#1d2330", `total ${fmt(snap.changes.total)}`],
    ...reasons.map((r) => [REASONS[r] || "#999", `${r} ${fmt(snap.changes.by_reason[r] || 0)}`])]);
  readout("r-changes", `${fmt(snap.changes.last_60s)} in 60 s`);
}

// At most `keep` segments stay readable on a laptop: the busiest ones; the rest become "(other)".
function foldMatrix(m, keep) {
  const special = new Set(["(new)", "(erased)"]);
  const segments = [...new Set([...m.from, ...m.to])].filter((s) => !special.has(s));
  if (segments.length <= keep) return m;
  const volume = new Map(segments.map((s) => [s, 0]));
  m.from.forEach((a, i) => m.to.forEach((b, j) => {
    if (volume.has(a)) volume.set(a, volume.get(a) + m.counts[i][j]);
    if (volume.has(b)) volume.set(b, volume.get(b) + m.counts[i][j]);
  }));
  const kept = new Set([...volume.entries()].sort((x, y) => y[1] - x[1]).slice(0, keep - 1)
    .map(([s]) => s));
  const name = (s) => (special.has(s) || kept.has(s) ? s : "(other)");
  const order = (list) => [...new Set(list.map(name))].sort((x, y) =>
    (x === "(new)" ? -1 : y === "(new)" ? 1 : 0) ||
    (x === "(erased)" ? 1 : y === "(erased)" ? -1 : 0) ||
    (x === "(other)" ? 1 : y === "(other)" ? -1 : 0) || x.localeCompare(y));
  const from = order(m.from);
  const to = order(m.to);
  const counts = from.map(() => to.map(() => 0));
  m.from.forEach((a, i) => m.to.forEach((b, j) => {
    counts[from.indexOf(name(a))][to.indexOf(name(b))] += m.counts[i][j];
  }));
  return { from, to, counts, total: m.total };
}

function drawMatrix(snap) {
  const c = canvas("c-matrix");
  const m = foldMatrix(snap.transitions, 10);
  readout("r-matrix", `${fmt(m.total)} transitions since start`);
  if (!m.from.length || !m.to.length) {
    empty(c, "no transition yet");
    return;
  }
  const longest = Math.max(...m.from.map((s) => Math.min(s.length, 16)));
  const left = Math.min(120, 12 + longest * 6.3);
  // column labels run up at 60 degrees: their height, and how far the last one reaches right
  const labelPx = 6 * Math.max(...m.to.map((s) => Math.min(s.length, 14)));
  const colLabel = Math.min(84, 8 + labelPx * 0.87);
  const area = { x0: left, x1: c.w - Math.min(44, labelPx * 0.5), y0: colLabel + 4, y1: c.h - 4 };
  const cw = (area.x1 - area.x0) / m.to.length;
  const ch = Math.min(40, (area.y1 - area.y0) / m.from.length);
  const max = Math.max(1, ...m.counts.flat());
  const g = el("g");
  m.from.forEach((from, i) => {
    const y = area.y0 + i * ch;
    g.appendChild(el("text", { x: area.x0 - 6, y: y + ch / 2 + 4, "text-anchor": "end" },
      short(from, 16)));
    m.to.forEach((to, j) => {
      const n = m.counts[i][j];
      const x = area.x0 + j * cw;
      const strength = n ? 0.12 + 0.88 * Math.log1p(n) / Math.log1p(max) : 0;
      const same = from === to;
      g.appendChild(el("rect", { x: x + 1, y: y + 1, width: Math.max(1, cw - 2),
        height: Math.max(1, ch - 2), rx: 2, class: "mark cell",
        fill: same ? "#f3f4f7" : `rgba(11, 92, 173, ${strength.toFixed(3)})` }));
      if (n && cw > 16) {
        const size = cw < 30 ? 9.5 : 11;
        g.appendChild(el("text", { x: x + cw / 2, y: y + ch / 2 + 3.5, "text-anchor": "middle",
          class: "cell-text",
          style: `fill: ${strength > 0.55 ? "#fff" : "#1d2330"}; font-size: ${size}px` },
        cw < 30 && n >= 1000 ? Math.round(n / 1000) + "k" : compact(n)));
      }
    });
  });
  m.to.forEach((to, j) => {
    const x = area.x0 + j * cw + cw / 2;
    g.appendChild(el("text", { x: x - 3, y: area.y0 - 5, "text-anchor": "start",
      transform: `rotate(-60 ${x - 3} ${area.y0 - 5})` }, short(to, 14)));
  });
  g.appendChild(el("text", { x: 2, y: 11, class: "label" }, "from ↓  to →"));
  c.svg.appendChild(g);
}

function drawDrift(snap) {
  const c = canvas("c-drift");
  const drift = snap.worker.drift;
  const entries = Object.entries(drift.segments);
  const bound = drift.bound;
  readout("r-drift", drift.max === null || drift.max === undefined ? "–"
    : `max ${fmt(drift.max, 3)}`);
  legend("l-drift", [[drift.exceeded ? "#d1495b" : "#009e73",
    `${drift.exceeded ? "above" : "within"} the bound ${fmt(bound, 2)} (dashed)`],
  ["#7f7f7f", `mean ${fmt(drift.mean, 3)}`],
  ["#7f7f7f", `model ${snap.worker.model_version || "–"}`]]);
  if (!entries.length) {
    empty(c, snap.worker.model_version === "rules-v1" ? "rules-v1 has no centroids to drift"
      : "no drift reported yet");
    return;
  }
  entries.forEach(([n]) => colourOf(n));
  const longest = Math.max(...entries.map(([n]) => Math.min(n.length, 16)));
  const area = { x0: Math.min(118, 10 + longest * 6.3), x1: c.w - 40, y0: 16, y1: c.h - 18 };
  const top = niceTicks(Math.max(...entries.map(([, v]) => v), (bound || 0) * 1.15, 0.01), 3);
  const max = top[top.length - 1];
  const xOf = (v) => area.x0 + (v / max) * (area.x1 - area.x0);
  const axis = el("g", { class: "axis" });
  for (const t of top) {
    axis.appendChild(el("line", { x1: xOf(t), x2: xOf(t), y1: area.y0, y2: area.y1,
      stroke: "#edf0f5" }));
    axis.appendChild(el("text", { x: xOf(t), y: area.y1 + 13, "text-anchor": "middle" },
      compact(t)));
  }
  axis.appendChild(el("line", { x1: area.x0, x2: area.x0, y1: area.y0, y2: area.y1 }));
  c.svg.appendChild(axis);
  const slot = (area.y1 - area.y0) / entries.length;
  const bar = Math.min(22, slot * 0.7);
  entries.forEach(([name, v], i) => {
    const y = area.y0 + i * slot + (slot - bar) / 2;
    const over = bound !== null && v > bound;
    c.svg.appendChild(el("text", { x: area.x0 - 6, y: y + bar / 2 + 4, "text-anchor": "end" },
      short(name, 16)));
    c.svg.appendChild(el("rect", { x: area.x0, y, width: Math.max(1.5, xOf(v) - area.x0),
      height: bar, rx: 2, fill: over ? "#d1495b" : colourOf(name), class: "mark" }));
    c.svg.appendChild(el("text", { x: Math.max(1.5, xOf(v)) + 4, y: y + bar / 2 + 4 },
      fmt(v, 3)));
  });
  if (bound !== null && bound !== undefined) {
    c.svg.appendChild(el("line", { x1: xOf(bound), x2: xOf(bound), y1: area.y0 - 4,
      y2: area.y1, class: "bound" }));
  }
  c.svg.appendChild(el("text", { x: 2, y: 11, class: "label" },
    "centroid displacement since training (std units)"));
}

function drawWorker(snap) {
  const w = snap.worker;
  const h = w.history;
  timeLines("c-events", h.t, [{ name: "events/s", colour: "#0072b2", values: h.events_per_s }],
    "events/s", { area: true, minMax: 1 });
  readout("r-events", w.events_per_s === null ? "–" : `${fmt(w.events_per_s)}/s`);
  legend("l-events", [["#0072b2", `received ${fmt(w.received)} (consumer group)`]]);

  timeLines("c-lag", h.t, [{ name: "lag", colour: "#e69f00", values: h.lag }], "records behind",
    { area: true, minMax: 1, integer: true });
  readout("r-lag", w.lag === null ? "–" : `${fmt(w.lag)} records`);
  legend("l-lag", [["#e69f00", `state ${w.state || "–"}`]]);

  timeLines("c-dead", h.t, [{ name: "dead letters", colour: "#d1495b", values: h.dead_letters }],
    "total", { area: true, minMax: 1, integer: true });
  readout("r-dead", w.dead_letters === null ? "–" : `${fmt(w.dead_letters)} total`);
  const reasons = Object.entries(w.dead_letters_by_reason).sort((a, b) => b[1] - a[1]);
  legend("l-dead", reasons.length
    ? reasons.map(([r, n]) => ["#d1495b", `${r} ${fmt(n)}`])
    : [["#d1495b", "none in this worker since it started"]]);
}

function drawStatus(snap, connected) {
  const conn = document.getElementById("s-conn");
  conn.textContent = connected ? "live" : "reconnecting";
  conn.className = connected ? "" : "bad";
  const worker = document.getElementById("s-worker");
  worker.textContent = snap.worker.reachable ? (snap.worker.state || "up") : "unreachable";
  worker.className = !snap.worker.reachable ? "bad" : snap.worker.state === "running" ? "" : "warn";
  worker.title = `${snap.worker.url}${snap.worker.error ? " — " + snap.worker.error : ""}`;
  document.getElementById("s-model").textContent = snap.worker.model_version || "–";
  const feed = document.getElementById("s-feed");
  feed.textContent = snap.source.feed_state;
  feed.className = snap.source.feed_state === "following" ? "" : "warn";
  feed.title = `${snap.source.topic} on ${snap.source.bootstrap}` +
    (snap.source.feed_error ? " — " + snap.source.feed_error : "");
  const bad = document.getElementById("s-undecodable");
  bad.textContent = fmt(snap.feed.undecodable);
  bad.className = snap.feed.undecodable ? "warn" : "";
  bad.title = snap.feed.last_undecodable || "";
  document.getElementById("s-erased").textContent = fmt(snap.feed.erased);
  document.getElementById("s-repeats").textContent = fmt(snap.feed.repeats);
  document.getElementById("s-at").textContent = clock(snap.at, true);
}

function render(snap, connected) {
  const steps = [drawStatus, drawSizes, drawMatrix, drawDrift, drawChanges, drawWorker];
  for (const step of steps) {
    try {
      step(snap, connected);
    } catch (err) {
      console.error(step.name, err);
    }
  }
  document.body.dataset.tick = String(snap.tick);
}

// ---- the live feed -----------------------------------------------------------------------------
function connect() {
  const source = new EventSource("/events");
  source.onmessage = (event) => {
    const snap = JSON.parse(event.data);
    if (!snap || !snap.sizes) return;
    last = snap;
    render(snap, true);
  };
  source.onerror = () => {
    if (last) render(last, false);
  };
}

window.addEventListener("resize", () => { if (last) render(last, true); });
connect();
