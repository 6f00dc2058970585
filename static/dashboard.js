// roomcast dashboard: reads /live/stats (Server-Sent Events, one event a second) and shows
// the figures as numbers and as rolling charts of the last 5 minutes. No dependencies.

const POINTS = 300; // 5 minutes at one point a second
const STALE_MS = 5000; // no event for this long: the stream is considered dead

const SERIES = {
  connections: { value: (d) => d.connections, format: int },
  rooms: { value: (d) => d.rooms, format: int },
  users: { value: (d) => d.users, format: int },
  frames_in: { value: (d) => d.frames_in_per_sec, format: rate },
  frames_out: { value: (d) => d.frames_out_per_sec, format: rate },
  deliveries: { value: (d) => d.deliveries_per_sec, format: rate },
  fanout_p99: { value: (d) => d.fanout_p99_ms, format: ms },
  rss: { value: (d) => (d.rss_bytes == null ? null : d.rss_bytes / 1048576), format: mib },
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

function int(v) { return v == null ? "–" : String(Math.round(v)); }
function rate(v) {
  if (v == null) return "–";
  return v >= 100 ? String(Math.round(v)) : v.toFixed(1);
}
function ms(v) {
  if (v == null) return "–";
  return v >= 10 ? v.toFixed(1) : v.toPrecision(2);
}
function mib(v) { return v == null ? "–" : v.toFixed(1); }

function duration(secs) {
  const d = Math.floor(secs / 86400), h = Math.floor(secs / 3600) % 24;
  const m = Math.floor(secs / 60) % 60, s = secs % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s}s`;
  return `${s}s`;
}

/** A fixed-size window of the last POINTS values (null: no value that second). */
class Window {
  constructor() { this.values = []; }
  push(v) {
    this.values.push(v);
    if (this.values.length > POINTS) this.values.splice(0, this.values.length - POINTS);
  }
}

const charts = {};
for (const card of document.querySelectorAll(".card[data-series]")) {
  const name = card.dataset.series;
  charts[name] = {
    window: new Window(),
    canvas: card.querySelector("canvas"),
    output: document.getElementById(OUTPUT_IDS[name]),
  };
}

function draw(chart) {
  const canvas = chart.canvas;
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (w === 0 || h === 0) return;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);

  const values = chart.window.values;
  let max = 0;
  for (const v of values) if (v != null && v > max) max = v;
  const top = max > 0 ? max * 1.15 : 1;
  const step = w / (POINTS - 1);
  const x0 = w - (values.length - 1) * step; // newest point at the right edge
  const y = (v) => h - 2 - (v / top) * (h - 14);

  const style = getComputedStyle(document.documentElement);
  const accent = style.getPropertyValue("--accent").trim() || "#2f6fdf";
  const soft = style.getPropertyValue("--accent-soft").trim() || "rgba(47,111,223,0.12)";
  const muted = style.getPropertyValue("--muted").trim() || "#66717d";

  // Baseline and scale.
  ctx.strokeStyle = style.getPropertyValue("--line").trim() || "#dfe3e8";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, h - 1.5);
  ctx.lineTo(w, h - 1.5);
  ctx.stroke();
  ctx.fillStyle = muted;
  ctx.font = "10px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.fillText(`max ${chart.format(max)}`, 2, 0);

  // One path per run of consecutive values; gaps stay gaps.
  let run = [];
  const flush = () => {
    if (run.length === 0) return;
    ctx.beginPath();
    ctx.moveTo(run[0][0], h - 1.5);
    for (const [px, py] of run) ctx.lineTo(px, py);
    ctx.lineTo(run[run.length - 1][0], h - 1.5);
    ctx.closePath();
    ctx.fillStyle = soft;
    ctx.fill();
    ctx.beginPath();
    run.forEach(([px, py], i) => (i === 0 ? ctx.moveTo(px, py) : ctx.lineTo(px, py)));
    if (run.length === 1) ctx.lineTo(run[0][0] + 1, run[0][1]);
    ctx.strokeStyle = accent;
    ctx.lineWidth = 1.5;
    ctx.stroke();
    run = [];
  };
  values.forEach((v, i) => {
    if (v == null) return flush();
    run.push([x0 + i * step, y(v)]);
  });
  flush();
}

function drawAll() {
  for (const name in charts) draw(charts[name]);
}

let lastTs = null;

function show(d) {
  // Seconds with no event (the stream was down) become gaps in the charts.
  if (lastTs != null && typeof d.ts === "number") {
    const missed = Math.min(POINTS, Math.round((d.ts - lastTs) / 1000) - 1);
    for (let i = 0; i < missed; i++) for (const name in charts) charts[name].window.push(null);
  }
  if (typeof d.ts === "number") lastTs = d.ts;
  for (const name in charts) {
    const chart = charts[name];
    const raw = SERIES[name].value(d);
    const v = typeof raw === "number" && Number.isFinite(raw) ? raw : null;
    chart.format = SERIES[name].format;
    chart.window.push(v);
    chart.output.textContent = chart.format(v);
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

function setState(state, detail = "") {
  stateEl.dataset.state = state;
  stateEl.textContent = state;
  detailEl.textContent = detail;
  document.body.classList.toggle("stale", state !== "connected");
}

let source = null;
let staleTimer = null;
let retryTimer = null;
let retryDelay = 1000;

function armStaleTimer() {
  clearTimeout(staleTimer);
  staleTimer = setTimeout(() => {
    setState("reconnecting", "no data");
    reconnectSoon();
  }, STALE_MS);
}

function reconnectSoon() {
  if (source) source.close();
  source = null;
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 15000);
}

function connect() {
  clearTimeout(retryTimer);
  source = new EventSource("/live/stats");
  armStaleTimer();
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
    if (stateEl.dataset.state !== "connected") setState("connected");
    armStaleTimer();
    show(d);
  };
  source.onerror = () => {
    // The browser retries by itself unless the answer was not a stream (e.g. 403); either
    // way, take over so the delay backs off and the state says what is happening.
    setState("reconnecting");
    reconnectSoon();
  };
}

window.addEventListener("resize", drawAll);
connect();
