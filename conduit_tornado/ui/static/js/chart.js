// Stacked bar charts drawn as inline SVG: round ticks, axis titles with units, a legend.
import { h, s } from "./dom.js";

/** Round ticks from 0 covering `max`: steps of 1, 2 or 5 times a power of ten. */
export function niceTicks(max, target = 5) {
  if (!(max > 0)) return [0, 1];
  const raw = max / target;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((v) => v >= raw);
  const ticks = [];
  for (let v = 0; v < max + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

/**
 * labels: x categories; series: [{name, values}] (same length as labels);
 * yTitle: axis title with its unit; format: value -> tick text; xFormat: label -> text.
 */
export function stackedBars({ labels, series, yTitle, xTitle, format, xFormat = (x) => x, title }) {
  const avail = document.querySelector("main")?.clientWidth || 800;
  const W = Math.max(300, Math.min(1160, avail - 64)), H = W < 500 ? 240 : 300;
  const left = 64, right = 12, top = 12, bottom = 48;
  const plotW = W - left - right, plotH = H - top - bottom;
  const totals = labels.map((_, i) => series.reduce((sum, sr) => sum + (sr.values[i] || 0), 0));
  const ticks = niceTicks(Math.max(0, ...totals));
  const yMax = ticks[ticks.length - 1];
  const y = (v) => top + plotH - (v / yMax) * plotH;
  const slot = plotW / Math.max(1, labels.length);
  const barW = Math.max(2, Math.min(36, slot * 0.7));
  const every = Math.ceil(labels.length / Math.max(1, Math.floor(plotW / 64)));

  const grid = s("g", { class: "grid" }, ticks.map((t) => s("line", { x1: left, x2: W - right, y1: y(t), y2: y(t) })));
  const yAxis = s("g", { class: "tick" }, ticks.map((t) =>
    s("text", { x: left - 8, y: y(t) + 4, "text-anchor": "end" }, format(t))));
  const xAxis = s("g", { class: "tick" }, labels.map((label, i) => i % every ? null :
    s("text", { x: left + slot * i + slot / 2, y: H - bottom + 16, "text-anchor": "middle" }, xFormat(label))));
  const bars = s("g", {}, labels.map((label, i) => {
    let base = 0;
    return series.map((sr, k) => {
      const v = sr.values[i] || 0;
      if (!v) return null;
      const rect = s("rect", {
        class: `s${(k % 7) + 1}`, x: left + slot * i + (slot - barW) / 2, width: barW,
        y: y(base + v), height: Math.max(0.5, y(base) - y(base + v)),
      }, s("title", {}, `${xFormat(label)} · ${sr.name}: ${format(v)}`));
      base += v;
      return rect;
    });
  }));
  const axisTitles = s("g", {},
    s("text", { class: "axis-title", x: 14, y: top + plotH / 2, transform: `rotate(-90 14 ${top + plotH / 2})`, "text-anchor": "middle" }, yTitle),
    s("text", { class: "axis-title", x: left + plotW / 2, y: H - 8, "text-anchor": "middle" }, xTitle));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title || yTitle },
    grid, yAxis, xAxis, bars, axisTitles,
    s("line", { x1: left, x2: W - right, y1: y(0), y2: y(0), stroke: "currentColor", "stroke-opacity": 0.4 }));
  const legend = h("div", { class: "legend" }, series.map((sr, k) =>
    h("span", {}, h("span", { class: `sw s${(k % 7) + 1}`, "aria-hidden": "true" }), sr.name)));
  return h("figure", { class: "chart", style: "margin:0" }, svg, series.length > 1 || series[0]?.name ? legend : null);
}
