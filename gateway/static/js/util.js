// Small DOM and formatting helpers shared by the panels. Everything that comes from
// the gateway (plates, service-call texts, agent names) is set as text, never as HTML:
// a vehicle can put any bytes in its plate field.

const SVG_NS = "http://www.w3.org/2000/svg";

/** h("div", {class: "x", dataset: {id: 1}}, child, "text") -> HTMLElement */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  applyAttrs(node, attrs);
  append(node, children);
  return node;
}

/** The same for SVG elements (attributes only, no properties). */
export function s(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  applyAttrs(node, attrs);
  append(node, children);
  return node;
}

function applyAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") {
      for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
    } else if (key === "style") {
      // through the CSSOM: the page's CSP forbids style="" attributes
      Object.assign(node.style, value);
    } else if (key === "text") {
      node.textContent = String(value);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Seconds as "42s", "3:07", "1:02:03". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const t = Math.max(0, Math.floor(seconds));
  if (t < 60) return `${t}s`;
  const hh = Math.floor(t / 3600);
  const mm = Math.floor((t % 3600) / 60);
  const ss = String(t % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

export function percent(x) {
  return x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`;
}

export function number(x, digits = 0) {
  if (x === null || x === undefined || !isFinite(x)) return "–";
  return x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function ms(x) {
  if (x === null || x === undefined) return "–";
  if (x >= 1000) return `${(x / 1000).toFixed(x < 10000 ? 1 : 0)} s`; // waited in the queue for an agent
  return x < 10 ? `${x.toFixed(1)} ms` : `${Math.round(x)} ms`;
}

export function clock(epoch) {
  const d = new Date(epoch * 1000);
  return d.toLocaleTimeString("en-GB", { hour12: false });
}

/** An SVG sparkline of one or more series (null = gap) sharing one vertical scale. */
export function sparkline(series, { width = 160, height = 36, classes = [] } = {}) {
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark", preserveAspectRatio: "none" });
  const n = Math.max(0, ...series.map((x) => x.length));
  const max = Math.max(1e-9, ...series.flat().filter((v) => v !== null && v !== undefined));
  series.forEach((values, i) => {
    let d = "";
    let pen = false;
    values.forEach((v, j) => {
      if (v === null || v === undefined) {
        pen = false;
        return;
      }
      const x = n > 1 ? (j / (n - 1)) * width : width;
      const y = height - 2 - (v / max) * (height - 4);
      d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
      pen = true;
    });
    if (d) svg.append(s("path", { d, class: classes[i] || "" }));
  });
  return svg;
}

/** A row of label, bar and count for "top N" lists. */
export function bars(items, { empty = "nothing yet" } = {}) {
  if (!items.length) return [h("p", { class: "empty", text: empty })];
  const max = Math.max(...items.map(([, n]) => n));
  return items.map(([label, n]) =>
    h(
      "div",
      { class: "bar-row", dataset: { key: label } },
      h("span", { class: "bar-label", text: label, title: label }),
      h("span", { class: "bar-track" }, h("span", { class: "bar-fill", style: { width: `${(100 * n) / max}%` } })),
      h("span", { class: "bar-count", text: n }),
    ),
  );
}
