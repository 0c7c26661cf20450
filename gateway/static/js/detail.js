// The session drawer: what a supervisor sees after clicking a session — the vehicle
// (identity, connection, last position), the alert, the trail on a small map and the
// session's events. Refreshed every few seconds while open, so the trail grows.

import { trailMap } from "./map.js";
import { KIND_LABEL } from "./panels.js";
import { clock, duration, h, number } from "./util.js";

const REFRESH_MS = 4000;

export class Detail {
  constructor(root, api, onClose) {
    this.root = root;
    this.api = api;
    this.onClose = onClose;
    this.sid = null;
    this.timer = null;
    root.querySelector(".close").addEventListener("click", () => this.close());
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.sid) this.close();
    });
  }

  async open(sid) {
    this.sid = sid;
    this.root.hidden = false;
    this.root.dataset.sid = sid;
    this.root.querySelector(".detail-body").replaceChildren(h("p", { class: "muted", text: "Loading…" }));
    clearInterval(this.timer);
    this.timer = setInterval(() => this.load(), REFRESH_MS);
    await this.load();
  }

  close() {
    clearInterval(this.timer);
    this.sid = null;
    this.root.hidden = true;
    delete this.root.dataset.sid;
    delete this.root.dataset.loaded;
    this.onClose();
  }

  async load() {
    const sid = this.sid;
    if (!sid) return;
    let data;
    try {
      data = await this.api(`/api/dashboard/sessions/${encodeURIComponent(sid)}`);
    } catch (err) {
      if (sid === this.sid) this.root.querySelector(".detail-body").replaceChildren(h("p", { class: "error", text: String(err.message || err) }));
      return;
    }
    if (sid !== this.sid) return; // another session was opened meanwhile
    this.render(data);
  }

  render(d) {
    const x = d.session;
    const v = d.vehicle || {};
    const pos = d.data.position || v.position;
    this.root.querySelector(".detail-title").replaceChildren(
      h("span", { class: `kind k-${x.kind}`, text: KIND_LABEL[x.kind] || x.kind.toUpperCase() }),
      h("span", { class: "detail-plate", text: v.plate || x.phone || x.id }),
      h("span", { class: `state st-${x.state}`, text: x.state }),
    );
    const facts = [
      ["Session", x.id],
      ["Queue", `${x.queue} · ${x.class} · ${x.tenant}`],
      ["Age", duration((x.closed_at || d.now) - x.arrival)],
      ["Agent", x.agent || "—"],
      x.disposition ? ["Disposition", x.disposition] : null,
      ["Vehicle", x.phone || "—"],
      v.maker || v.model ? ["Device", [v.maker, v.model, v.terminal_id].filter(Boolean).join(" ")] : null,
      "online" in v ? ["Connection", v.online ? `online · JT/T 808-${v.protocol}` : "offline"] : null,
      pos ? ["Position", `${pos.lat.toFixed(5)}, ${pos.lon.toFixed(5)} · ${number(pos.speed_kmh, 0)} km/h`] : null,
      v.last_seen ? ["Last report", `${clock(v.last_seen)} (${duration(d.now - v.last_seen)} ago)`] : null,
      d.data.alarms && d.data.alarms.length ? ["Alarms", d.data.alarms.join(", ")] : null,
      d.data.alerts > 1 ? ["Repeats", String(d.data.alerts)] : null,
      d.data.request ? ["Request", d.data.request] : null,
      d.data.customer ? ["Customer", JSON.stringify(d.data.customer)] : null,
    ].filter(Boolean);
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "trail-map");
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
    const events = d.events
      .slice()
      .reverse()
      .map((e) =>
        h(
          "li",
          { dataset: { event: e.event } },
          h("span", { class: "ev-time", text: clock(e.at) }),
          h("span", { class: "ev-name", text: e.event }),
          h("span", { class: "ev-data muted", text: eventText(e.data) }),
        ),
      );
    this.root.querySelector(".detail-body").replaceChildren(
      h("dl", { class: "facts" }, ...facts.flatMap(([k, val]) => [h("dt", { text: k }), h("dd", { text: val })])),
      h("h3", { text: `Trail · ${d.trail.length} points` }),
      svg,
      h("h3", { text: "Events" }),
      h("ol", { class: "events" }, ...events),
    );
    trailMap(svg, d.trail, pos ? { lat: pos.lat, lon: pos.lon } : null);
    svg.dataset.points = String(d.trail.length);
    this.root.dataset.loaded = "1";
  }
}

function eventText(data) {
  const parts = [];
  for (const key of ["agent", "reason", "disposition", "queue", "to", "wait_s", "handle_s"]) {
    if (data[key] !== undefined && data[key] !== null && data[key] !== "") parts.push(`${key.replace("_s", "")} ${data[key]}`);
  }
  return parts.join(" · ");
}
