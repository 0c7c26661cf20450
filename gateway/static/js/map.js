// The map panel: region outlines shipped with the gateway (GET /api/dashboard/map, Natural
// Earth), vehicles and alert locations on top, in plain SVG. No tiles: the outline is
// projected once (spherical Mercator, in "degree-like" units so that lon stays x) and
// zooming is only a change of the SVG viewBox, so the 20k outline points are never
// re-projected; markers are sized from the current units-per-pixel instead.

import { s } from "./util.js";

const DEG = 180 / Math.PI;
const CHINA = [73, 17.5, 135.5, 54]; // lon0, lat0, lon1, lat1
const MIN_SPAN = 0.25; // degrees: the fleet view never zooms closer than this
const KIND_CLASS = { crash: "k-crash", rollover: "k-crash", sos: "k-sos", service: "k-service" };

/** [x, y] map units for lon/lat (Mercator, y grows downwards like SVG). */
export function project(lon, lat) {
  const phi = Math.max(-85, Math.min(85, lat)) / DEG;
  return [lon, -DEG * Math.log(Math.tan(Math.PI / 4 + phi / 2))];
}

function ringPath(ring) {
  let d = "";
  ring.forEach(([lon, lat], i) => {
    const [x, y] = project(lon, lat);
    d += `${i ? "L" : "M"}${x.toFixed(3)},${y.toFixed(3)}`;
  });
  return d + "Z";
}

export class Outline {
  static async load() {
    const r = await fetch("/api/dashboard/map");
    if (!r.ok) throw new Error(`map data: HTTP ${r.status}`);
    return new Outline(await r.json());
  }

  constructor(doc) {
    this.regions = doc.regions.map((r) => ({
      name: r.name,
      kind: r.kind,
      d: r.polygons.map((poly) => poly.map(ringPath).join("")).join(""),
    }));
  }

  /** Draw every region into ``group``; returns name -> path element. */
  draw(group) {
    const paths = new Map();
    for (const r of this.regions) {
      const p = s("path", { d: r.d, class: `region ${r.kind}`, dataset: { region: r.name } }, s("title", { text: r.name }));
      group.append(p);
      paths.set(r.name, p);
    }
    return paths;
  }
}

/** A viewBox [x, y, w, h] around lon/lat points, padded, at least MIN_SPAN wide. */
function boxAround(points, pad = 0.15, minSpan = MIN_SPAN) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const [lon, lat] of points) {
    x0 = Math.min(x0, lon); x1 = Math.max(x1, lon);
    y0 = Math.min(y0, lat); y1 = Math.max(y1, lat);
  }
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const half = Math.max(minSpan, x1 - x0, y1 - y0) * (0.5 + pad);
  const [ax, ay] = project(cx - half, cy + half);
  const [bx, by] = project(cx + half, cy - half);
  return [ax, ay, bx - ax, by - ay];
}

function chinaBox() {
  const [ax, ay] = project(CHINA[0], CHINA[3]);
  const [bx, by] = project(CHINA[2], CHINA[1]);
  return [ax, ay, bx - ax, by - ay];
}

/** One path of many small circles: thousands of dots as a single SVG element. */
function dotsPath(points, r) {
  const d = [];
  for (const [x, y] of points) {
    d.push(`M${(x - r).toFixed(4)},${y.toFixed(4)}a${r},${r} 0 1,0 ${2 * r},0a${r},${r} 0 1,0 ${-2 * r},0`);
  }
  return d.join("");
}

export class MapView {
  /** svg: the panel's <svg>; onSession(id): called when an alert marker is clicked. */
  constructor(svg, outline, onSession) {
    this.svg = svg;
    this.onSession = onSession;
    this.land = s("g", { id: "map-land", class: "land" });
    this.paths = outline.draw(this.land);
    this.vehicles = s("g", { class: "vehicles" });
    this.alerts = s("g", { class: "alerts" });
    svg.replaceChildren(this.land, this.vehicles, this.alerts);
    this.mode = "fleet";
    this.view = null;
    this.last = null;
    this.selected = null;
    svg.addEventListener("click", (e) => {
      const target = e.target.closest("[data-sid]");
      if (target) this.onSession(target.dataset.sid);
    });
  }

  setMode(mode) {
    this.mode = mode;
    this.view = null;
    if (this.last) this.update(this.last);
  }

  select(sid) {
    this.selected = sid;
    for (const m of this.alerts.querySelectorAll("[data-sid]")) m.classList.toggle("selected", m.dataset.sid === sid);
  }

  /** Map units per screen pixel for the current viewBox (preserveAspectRatio "meet"). */
  unitsPerPx() {
    const rect = this.svg.getBoundingClientRect();
    const [, , w, hgt] = this.view;
    return Math.max(w / Math.max(1, rect.width), hgt / Math.max(1, rect.height));
  }

  update(snap) {
    this.last = snap;
    const vehicles = snap.map.vehicles; // [lat, lon, flags]
    const alerts = snap.sessions.filter((x) => x.lat !== null && x.lon !== null);
    const lonlat = vehicles.map(([lat, lon]) => [lon, lat]).concat(alerts.map((a) => [a.lon, a.lat]));
    if (this.mode === "china") {
      if (!this.view) this.view = chinaBox();
    } else if (lonlat.length && (!this.view || this.outside(lonlat) > 0.02)) {
      // refit only when the fleet leaves the picture: a map that jumps every second is unreadable
      this.view = boxAround(lonlat);
    } else if (!this.view) {
      this.view = chinaBox();
    }
    this.svg.setAttribute("viewBox", this.view.map((v) => v.toFixed(4)).join(" "));
    const u = this.unitsPerPx();

    const groups = { 0: [], 1: [], 2: [], 3: [] };
    for (const [lat, lon, flags] of vehicles) groups[flags].push(project(lon, lat));
    this.vehicles.replaceChildren(
      s("path", { class: "v-offline", d: dotsPath(groups[0].concat(groups[2]), 1.6 * u) }),
      s("path", { class: "v-online", d: dotsPath(groups[1], 2.2 * u) }),
      s("path", { class: "v-session", d: dotsPath(groups[3], 3 * u) }),
    );

    const markers = alerts.map((a) => {
      const [x, y] = project(a.lon, a.lat);
      const cls = `alert ${KIND_CLASS[a.kind] || "k-other"} st-${a.state}${a.id === this.selected ? " selected" : ""}`;
      return s(
        "g",
        { class: cls, dataset: { sid: a.id } },
        s("circle", { cx: x, cy: y, r: 11 * u, class: "halo" }),
        s("circle", { cx: x, cy: y, r: 5.5 * u, class: "core" }),
        s("title", { text: `${a.kind} · ${a.plate || a.phone || a.id} · ${a.state}` }),
      );
    });
    this.alerts.replaceChildren(...markers);

    const counts = new Map(snap.regions);
    const max = Math.max(1, ...counts.values());
    for (const [name, path] of this.paths) {
      const n = counts.get(name) || 0;
      path.classList.toggle("hot", n > 0);
      path.style.fillOpacity = n ? String(0.55 + (0.45 * n) / max) : "";
    }
  }

  outside(lonlat) {
    const [x, y, w, hgt] = this.view;
    let out = 0;
    for (const [lon, lat] of lonlat) {
      const [px, py] = project(lon, lat);
      if (px < x || px > x + w || py < y || py > y + hgt) out++;
    }
    return out / lonlat.length;
  }
}

/** The detail drawer's map: the session's trail over the same outline (reused via <use>). */
export function trailMap(svg, trail, alert) {
  const pts = trail.map(([, lat, lon]) => [lon, lat]);
  if (alert) pts.push([alert.lon, alert.lat]);
  if (!pts.length) {
    svg.replaceChildren();
    return;
  }
  const view = boxAround(pts, 0.2, 0.004); // at least ~400 m across: a parked car is a dot, not a blank map
  svg.setAttribute("viewBox", view.map((v) => v.toFixed(5)).join(" "));
  const rect = svg.getBoundingClientRect();
  const u = Math.max(view[2] / Math.max(1, rect.width), view[3] / Math.max(1, rect.height));
  const xy = trail.map(([, lat, lon]) => project(lon, lat));
  const children = [s("use", { href: "#map-land", class: "land" })];
  if (xy.length > 1) {
    children.push(s("polyline", { class: "trail", points: xy.map(([x, y]) => `${x.toFixed(5)},${y.toFixed(5)}`).join(" ") }));
  }
  if (xy.length) {
    const [x0, y0] = xy[0];
    const [x1, y1] = xy[xy.length - 1];
    children.push(s("circle", { class: "trail-start", cx: x0, cy: y0, r: 4 * u }));
    children.push(s("circle", { class: "trail-end", cx: x1, cy: y1, r: 5 * u }));
  }
  if (alert) {
    const [ax, ay] = project(alert.lon, alert.lat);
    children.push(s("circle", { class: "trail-alert", cx: ax, cy: ay, r: 8 * u }));
  }
  svg.replaceChildren(...children);
}
