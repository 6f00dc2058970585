// The dashboard's time-series chart: one SVG per card, drawn by hand (the page loads nothing
// from the network and has no build step). A value axis with ticks in the series' unit, a
// time axis with ticks relative to the newest point ("−30 s", "now"), the line broken where
// seconds are missing. Axis labels are SVG text nodes, so they can be read and tested.

const SVG = 'http://www.w3.org/2000/svg';
const MARGIN = { top: 8, right: 8, bottom: 18, left: 52 };
const GAP_MS = 1500;  // points further apart than this are not joined
const MIN_LABEL_SPACING = 44;  // px between time labels, so "−4 min" and "−3 min" don't touch

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.append(document.createTextNode(text));
  return node;
}

/** A "nice" step (1, 2 or 5 × 10^n) giving about `count` intervals up to `max`. */
export function niceStep(max, count = 3) {
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10;
  return step * mag;
}

/** Time ticks for a window of `secs`: every 15 s up to a minute, every minute beyond. */
export function timeTicks(secs) {
  const every = secs <= 60 ? 15 : 60;
  const ticks = [];
  for (let ago = secs; ago >= 0; ago -= every) {
    let label = 'now';
    if (ago > 0) label = every >= 60 ? `−${ago / 60} min` : `−${ago} s`;
    ticks.push({ ago, label });
  }
  return ticks;
}

/**
 * Draws `points` ([{ t: ms since the epoch, v: number | null }], oldest first) into `svg`:
 * the last `windowSecs` seconds before the newest point. `tick(v)` labels a value tick (with
 * its unit); `unit` titles the value axis; `minStep` is the smallest step between value
 * ticks (1 for counts).
 */
export function drawChart(svg, points, { windowSecs, tick, unit, minStep = 0 }) {
  const w = svg.clientWidth;
  const h = svg.clientHeight;
  if (w === 0 || h === 0) return;
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const plotW = w - MARGIN.left - MARGIN.right;
  const plotH = h - MARGIN.top - MARGIN.bottom;
  const end = points.length ? points[points.length - 1].t : Date.now();
  const start = end - windowSecs * 1000;
  const shown = points.filter((p) => p.t >= start);

  let max = 0;
  for (const p of shown) if (p.v != null && p.v > max) max = p.v;
  const step = Math.max(minStep, niceStep(max > 0 ? max : 1));
  const top = Math.max(step, Math.ceil(max / step) * step);
  const x = (t) => MARGIN.left + ((t - start) / (end - start)) * plotW;
  const y = (v) => MARGIN.top + plotH - (v / top) * plotH;

  const yAxis = el('g', { class: 'axis axis-y' });
  for (let v = 0; v <= top + step / 2; v += step) {
    yAxis.append(
      el('line', { class: 'grid', x1: MARGIN.left, x2: w - MARGIN.right, y1: y(v), y2: y(v) }),
      el('text', { class: 'tick', x: MARGIN.left - 4, y: y(v), 'text-anchor': 'end',
        'dominant-baseline': 'middle' }, tick(v)),
    );
  }
  yAxis.append(el('text', { class: 'axis-title', x: MARGIN.left, y: 0, 'text-anchor': 'start',
    'dominant-baseline': 'hanging' }, unit));

  const xAxis = el('g', { class: 'axis axis-x' });
  xAxis.append(el('line', { class: 'baseline', x1: MARGIN.left, x2: w - MARGIN.right,
    y1: MARGIN.top + plotH, y2: MARGIN.top + plotH }));
  // A mark at every tick; labels at every `every`-th one from "now", as many as fit.
  const ticks = timeTicks(windowSecs);
  const spacing = plotW / Math.max(1, ticks.length - 1);
  const every = Math.ceil(MIN_LABEL_SPACING / spacing);
  ticks.forEach(({ ago, label }, i) => {
    const tx = x(end - ago * 1000);
    xAxis.append(el('line', { class: 'tick-mark', x1: tx, x2: tx, y1: MARGIN.top + plotH,
      y2: MARGIN.top + plotH + 3 }));
    if ((ticks.length - 1 - i) % every === 0) {
      xAxis.append(el('text', { class: 'tick', x: tx, y: h, 'text-anchor': ago === 0 ? 'end' : 'middle' },
        label));
    }
  });

  // One area and one line per run of consecutive points; gaps stay gaps.
  const series = el('g', { class: 'series' });
  let run = [];
  const flush = () => {
    if (run.length === 0) return;
    const line = run.map(([px, py], i) => `${i ? 'L' : 'M'}${px.toFixed(1)},${py.toFixed(1)}`).join('');
    const base = (MARGIN.top + plotH).toFixed(1);
    const first = run[0][0].toFixed(1);
    const last = run[run.length - 1][0].toFixed(1);
    series.append(
      el('path', { class: 'area', d: `M${first},${base}${line.replace(/^M/, 'L')}L${last},${base}Z` }),
      el('path', { class: 'line', d: run.length === 1 ? `${line}h1` : line }),
    );
    run = [];
  };
  let prevT = null;
  for (const p of shown) {
    if (p.v == null || (prevT !== null && p.t - prevT > GAP_MS)) flush();
    if (p.v != null) run.push([x(p.t), y(p.v)]);
    prevT = p.t;
  }
  flush();

  svg.replaceChildren(yAxis, xAxis, series);
}
