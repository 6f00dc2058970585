// roomcast dashboard: reads /live/stats (Server-Sent Events, one event a second) and shows
// the figures as numbers (with the locale's thousands separators) and as charts with axes
// over the last 60 s, or 5 min on request. When no event has come for STALE_MS, or the feed
// failed, the page says its figures are stale. No dependencies.
//
// Hooks for browser tests: #stat-* (the figures), .card[data-series] svg.chart with
// g.axis-y / g.axis-x text.tick and text.axis-title; .window-toggle button[data-window]
// (aria-pressed on the chosen one) and data-window on <body> (seconds charted); #live-state
// (data-state "connecting", "connected", "stale" or "reconnecting"); #stale-banner (hidden
// while the figures are live) and the class "stale" on <body>; from /health, polled every
// HEALTH_EVERY_MS: #stat-status, #stat-store and, in a cluster, #stat-broker (data-state "ok"
// or "bad") and #stat-broker-reconnects inside #broker-state; #single-node otherwise.

import { drawChart } from "./js/chart.js";

const KEEP_MS = 300 * 1000; // the longest window
const STALE_MS = 3000; // no event for this long: the figures are stale
const SILENT_RECONNECT_MS = 10000; // no event for this long: open the stream again
const WINDOWS = [60, 300]; // seconds; the first is the default
const HEALTH_EVERY_MS = 2000; // /health never waits behind chat traffic: cheap to ask

const number = (digits) =>
  new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
const INT = number(0);
const ONE = number(1);
const TWO_SIGNIFICANT = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 2 });
const COMPACT = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

function int(v) { return v == null ? "–" : INT.format(Math.round(v)); }
function rate(v) {
  if (v == null) return "–";
  return v >= 100 ? INT.format(Math.round(v)) : ONE.format(v);
}
function ms(v) {
  if (v == null) return "–";
  return v >= 10 ? ONE.format(v) : TWO_SIGNIFICANT.format(v);
}
function mib(v) { return v == null ? "–" : ONE.format(v); }

/** A value tick: compact ("1.5K"), with the unit after it when there is one. */
const tickWith = (suffix) => (v) => `${COMPACT.format(v)}${suffix}`;

const SERIES = {
  connections: { value: (d) => d.connections, format: int, tick: tickWith(""), minStep: 1, unit: "sockets" },
  rooms: { value: (d) => d.rooms, format: int, tick: tickWith(""), minStep: 1, unit: "rooms" },
  users: { value: (d) => d.users, format: int, tick: tickWith(""), minStep: 1, unit: "users" },
  frames_in: { value: (d) => d.frames_in_per_sec, format: rate, tick: tickWith("/s"), unit: "frames/s" },
  frames_out: { value: (d) => d.frames_out_per_sec, format: rate, tick: tickWith("/s"), unit: "frames/s" },
  deliveries: { value: (d) => d.deliveries_per_sec, format: rate, tick: tickWith("/s"), unit: "deliveries/s" },
  fanout_p99: { value: (d) => d.fanout_p99_ms, format: ms, tick: tickWith(" ms"), unit: "ms" },
  rss: {
    value: (d) => (d.rss_bytes == null ? null : d.rss_bytes / 1048576),
    format: mib, tick: tickWith(" MiB"), unit: "MiB",
  },
};

const OUTPUT_IDS = {
  connections: "stat-connections",
  rooms: "stat-rooms",
  users: "stat-users",
  frames_in: "stat-frames-in",
  frames_out: "stat-frames-out",
  deliveries: "stat-deliveries",
  fanout_p99: "stat-fanout-p99",
  rss: "stat-rss",
};

function duration(secs) {
  const d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24;
  const m = Math.floor(secs / 60) % 60, s = secs % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

const charts = {};
for (const card of document.querySelectorAll(".card[data-series]")) {
  const name = card.dataset.series;
  charts[name] = {
    series: SERIES[name],
    points: [], // { t, v }, oldest first, the last KEEP_MS
    svg: card.querySelector("svg.chart"),
    output: document.getElementById(OUTPUT_IDS[name]),
  };
}

let windowSecs = WINDOWS[0];

function drawAll() {
  for (const name in charts) {
    const { svg, points, series } = charts[name];
    drawChart(svg, points, { windowSecs, ...series });
  }
}

function setWindow(secs) {
  windowSecs = secs;
  document.body.dataset.window = String(secs);
  const label = secs > 60 ? `${secs / 60} minutes` : `${secs} seconds`;
  document.getElementById("window-label").textContent = label;
  document.querySelector("main.grid").setAttribute("aria-label", `Server figures, last ${label}`);
  for (const button of document.querySelectorAll(".window-toggle button[data-window]")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.window) === secs));
  }
  drawAll();
}

let lastTs = null; // the newest event's ts (server clock)
let lastEventAt = Date.now(); // when it arrived (page clock); page start until then
let feedFailed = false; // the stream errored since the last event

function show(d) {
  if (typeof d.ts !== "number" || (lastTs != null && d.ts <= lastTs)) return; // seen already
  lastTs = d.ts;
  for (const name in charts) {
    const chart = charts[name];
    const raw = chart.series.value(d);
    const v = typeof raw === "number" && Number.isFinite(raw) ? raw : null;
    chart.points.push({ t: d.ts, v });
    const cut = chart.points.findIndex((p) => p.t >= d.ts - KEEP_MS);
    if (cut > 0) chart.points.splice(0, cut);
    chart.output.textContent = chart.series.format(v);
  }
  document.getElementById("stat-chat-connections").textContent = int(d.chat_connections);
  document.getElementById("stat-notification-connections").textContent =
    int(d.notification_connections);
  if (typeof d.uptime_secs === "number") {
    document.getElementById("stat-uptime").textContent = duration(d.uptime_secs);
  }
  drawAll();
}

const stateEl = document.getElementById("live-state");
const detailEl = document.getElementById("live-detail");
const banner = document.getElementById("stale-banner");
const bannerText = document.getElementById("stale-text");

function setState(state, detail = "") {
  stateEl.dataset.state = state;
  stateEl.textContent = state;
  detailEl.textContent = detail;
}

/** Shows whether the figures are live; runs on every event, error and twice a second. */
function checkStale() {
  const silentFor = Date.now() - lastEventAt;
  const stale = feedFailed || silentFor > STALE_MS;
  document.body.classList.toggle("stale", stale);
  banner.hidden = !stale;
  if (stale) {
    const secs = Math.round(silentFor / 1000);
    const feed = feedFailed ? "lost" : "silent";
    bannerText.textContent = lastTs == null
      ? `No figures yet: the live feed is ${feedFailed ? "unavailable" : "silent"}. Retrying…`
      : `These figures are from ${new Date(lastTs).toLocaleTimeString()}, ${secs} s ago: `
        + `the live feed is ${feed}. Retrying…`;
    if (!feedFailed && stateEl.dataset.state === "connected") setState("stale", "no data");
  }
  if (silentFor > SILENT_RECONNECT_MS && source && !retryTimer) {
    setState("reconnecting", "no data");
    reconnectSoon();
  }
}

let source = null;
let retryTimer = null;
let retryDelay = 1000;

function reconnectSoon() {
  if (source) source.close();
  source = null;
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 15000);
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  source = new EventSource("/live/stats");
  source.onopen = () => {
    retryDelay = 1000;
    setState("connected");
  };
  source.onmessage = (e) => {
    let d;
    try {
      d = JSON.parse(e.data);
    } catch {
      return;
    }
    lastEventAt = Date.now();
    feedFailed = false;
    if (stateEl.dataset.state !== "connected") setState("connected");
    show(d);
    checkStale();
  };
  source.onerror = () => {
    // The browser retries by itself unless the answer was not a stream (e.g. 403); either
    // way, take over so the delay backs off and the state says what is happening.
    feedFailed = true;
    setState("reconnecting");
    reconnectSoon();
    checkStale();
  };
}

/** The server's state: its health, its history store and, in a cluster, its broker. */
function showHealth(h) {
  const set = (id, text, good) => {
    const e = document.getElementById(id);
    e.textContent = text;
    e.dataset.state = good ? "ok" : "bad";
  };
  if (!h || typeof h.status !== "string") {
    set("stat-status", "unreachable", false);
    return;
  }
  set("stat-status", h.status, h.status === "ok");
  set("stat-store", h.store, h.store === "ok");
  const cluster = typeof h.broker === "string" && h.broker !== "local";
  document.getElementById("broker-state").hidden = !cluster;
  document.getElementById("single-node").hidden = cluster;
  if (cluster) {
    set("stat-broker", h.broker, h.broker === "up");
    document.getElementById("stat-broker-reconnects").textContent = int(h.broker_reconnects);
  }
}

async function pollHealth() {
  let h = null;
  try {
    // 503 (degraded) still carries the body that says why.
    const res = await fetch("/health", { cache: "no-store" });
    h = await res.json();
  } catch {
    h = null;
  }
  showHealth(h);
  setTimeout(pollHealth, HEALTH_EVERY_MS);
}

for (const button of document.querySelectorAll(".window-toggle button[data-window]")) {
  button.addEventListener("click", () => setWindow(Number(button.dataset.window)));
}
window.addEventListener("resize", drawAll);
setWindow(WINDOWS[0]);
setInterval(checkStale, 500);
connect();
pollHealth();
