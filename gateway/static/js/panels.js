// The panels that are plain lists and tables: ingest tiles, queues, agents, sessions,
// regions and hot topics. Each takes the latest snapshot and replaces its panel's
// contents; times that tick (age, time in state) carry data-since (server epoch seconds)
// and are advanced locally between snapshots by ticker().

import { bars, duration, h, ms, number, percent, sparkline } from "./util.js";

const STATE_LABEL = {
  available: "available",
  offered: "offered",
  busy: "busy",
  wrapup: "wrap-up",
  break: "break",
  disconnected: "disconnected",
  logged_out: "logged out",
};
const KIND_LABEL = { crash: "CRASH", sos: "SOS", rollover: "ROLLOVER", service: "SERVICE" };

function ticking(since, extra = {}) {
  return h("span", { class: "since", dataset: { since }, ...extra });
}

/** Advance every [data-since] text from the server clock estimate. */
export function ticker(root, serverNow) {
  const now = serverNow();
  for (const el of root.querySelectorAll("[data-since]")) {
    el.textContent = duration(now - Number(el.dataset.since));
  }
}

function slClass(value, target) {
  if (value === null || value === undefined) return "sl-none";
  if (value >= target) return "sl-good";
  return value >= target - 0.15 ? "sl-warn" : "sl-bad";
}

function sl(value, target, extra = "") {
  return h("span", { class: `sl ${slClass(value, target)} ${extra}`, text: percent(value) });
}

export function renderIngest(root, snap) {
  const ing = snap.ingest;
  const spark = ing.spark;
  const open = snap.sessions.length;
  const waiting = snap.sessions.filter((x) => x.state === "waiting" || x.state === "offered").length;
  let met = 0, resolved = 0;
  for (const q of snap.queues) {
    const w = q.window;
    if (w.service_level !== null) {
      resolved += w.answered + w.abandoned;
      met += w.service_level * (w.answered + w.abandoned);
    }
  }
  const [p50, p99] = ing.crash_to_offer_ms;
  root.replaceChildren(
    tile("Vehicles online", number(ing.connections_open), `${number(snap.map.known)} known`, null, "kpi-vehicles"),
    tile("Reports / s", number(ing.reports_per_s), `${number(ing.gps_reports)} stored · ${number(ing.gps_shed)} shed`,
      sparkline([spark.map((p) => p[3])], { classes: ["line-reports"] }), "kpi-reports"),
    tile("Open sessions", number(open), `${waiting} waiting · ${open - waiting} with agents`, null, "kpi-open"),
    tile("Service level", resolved ? percent(met / resolved) : "–", "all queues · 15 min", null, "kpi-sl"),
    tile("Crash → offer", `${ms(p50)} / ${ms(p99)}`, "p50 / p99 · last minute",
      sparkline([spark.map((p) => p[1]), spark.map((p) => p[2])], { classes: ["line-p50", "line-p99"] }), "kpi-latency"),
    tile("Sessions · last hour", number(snap.topics.sessions_last_hour), `${number(ing.sessions_created)} since start`, null, "kpi-hour"),
  ); // prettier-ignore
}

function tile(label, value, sub, chart, id) {
  return h(
    "div",
    { class: chart ? "tile has-chart" : "tile", id },
    h("div", { class: "tile-label", text: label }),
    h("div", { class: "tile-value", text: value }),
    h("div", { class: "tile-sub", text: sub }),
    chart ? h("div", { class: "tile-chart" }, chart) : null,
  );
}

export function renderQueues(tbody, snap) {
  const rows = [];
  for (const q of snap.queues) {
    const p = q.predicted;
    rows.push(
      h(
        "tr",
        { class: "queue", dataset: { queue: q.name } },
        h("th", { scope: "row" }, h("span", { class: "qname", text: q.name }),
          h("span", { class: "muted qtenant", text: q.tenant === "*" ? "every tenant" : q.tenant })),
        h("td", { class: `num depth ${q.depth ? "busy" : ""}`, text: q.depth }),
        h("td", { class: "num" }, q.depth ? ticking(snap.now - q.longest_wait_s) : "–"),
        h("td", { class: "num" }, sl(q.window.service_level, q.sl_target, "now")),
        h("td", { class: "num" }, h("span", { class: "sl predicted", text: percent(p.service_level) })),
        h("td", { class: "num", title: "agents staffing it / needed for the target (Erlang C)",
          text: `${q.staffed}${p.agents_needed !== null ? ` / ${p.agents_needed}` : ""}` }),
      ), // prettier-ignore
    );
    for (const c of q.classes) {
      rows.push(
        h(
          "tr",
          { class: "klass", dataset: { queue: q.name, klass: c.name } },
          h("th", { scope: "row" }, h("span", { class: "cname", text: c.name }),
            h("span", { class: "muted", text: ` ≤${number(c.target_s)}s` })),
          h("td", { class: "num depth", text: c.depth || "" }),
          h("td", { class: "num" }, c.depth ? ticking(snap.now - c.longest_wait_s) : ""),
          h("td", { class: "num" }, sl(c.window.service_level, q.sl_target, "now")),
          h("td", { class: "num" }, h("span", { class: "sl predicted", text: percent(c.predicted.service_level) })),
          h("td", { class: "num muted", text: c.window.offered ? `${c.window.offered} in` : "" }),
        ), // prettier-ignore
      );
    }
  }
  tbody.replaceChildren(...rows);
}

export function renderAgents(root, summary, snap) {
  const counts = {};
  for (const a of snap.agents) counts[a.state] = (counts[a.state] || 0) + 1;
  summary.replaceChildren(
    ...Object.entries(STATE_LABEL)
      .filter(([state]) => counts[state])
      .map(([state, label]) => h("span", { class: `chip st-${state}`, text: `${counts[state]} ${label}` })),
  );
  root.replaceChildren(
    ...snap.agents.map((a) =>
      h(
        "div",
        { class: `agent st-${a.state}`, dataset: { agent: a.id, state: a.state } },
        h("div", { class: "agent-name", text: a.name, title: a.id }),
        h("div", { class: "agent-state" }, h("span", { text: STATE_LABEL[a.state] || a.state }),
          a.reason && a.state === "break" ? h("span", { class: "muted", text: ` · ${a.reason}` }) : null),
        h("div", { class: "agent-time" }, ticking(snap.now - a.time_in_state_s)),
        h("div", { class: "agent-meta muted", text: `${a.handled} handled${a.sessions.length ? ` · ${a.sessions.length} open` : ""}` }),
      ), // prettier-ignore
    ),
  );
}

export function renderSessions(tbody, snap, selected) {
  if (!snap.sessions.length) {
    tbody.replaceChildren(h("tr", {}, h("td", { colspan: 5, class: "empty", text: "No open sessions" })));
    return;
  }
  tbody.replaceChildren(
    ...snap.sessions.map((x) =>
      h(
        "tr",
        { class: `session st-${x.state}${x.id === selected ? " selected" : ""}`, dataset: { sid: x.id }, tabindex: 0 },
        h("td", {}, h("span", { class: `kind k-${x.kind}`, text: KIND_LABEL[x.kind] || x.kind.toUpperCase() })),
        h("td", { class: "who" }, h("div", { text: x.plate || x.phone || "—" }),
          h("div", { class: "muted small", text: x.request || (x.alarms || []).join(", ") || x.tenant })),
        h("td", { class: "num" }, ticking(x.arrival)),
        h("td", {}, h("span", { class: `state st-${x.state}`, text: x.state })),
        h("td", { class: "small", text: x.agent || x.queue }),
      ), // prettier-ignore
    ),
  );
}

export function renderRegions(root, snap) {
  root.replaceChildren(...bars(snap.regions, { empty: "No sessions in the last hour" }));
}

export function renderTopics(root, snap) {
  const t = snap.topics;
  root.replaceChildren(
    h("div", { class: "topic", id: "topic-kinds" }, h("h3", { text: "Session kinds" }), ...bars(t.kinds)),
    h("div", { class: "topic", id: "topic-dispositions" }, h("h3", { text: "Dispositions" }), ...bars(t.dispositions)),
    h("div", { class: "topic", id: "topic-requests" }, h("h3", { text: "Service requests" }),
      ...bars(t.requests, { empty: "no service calls" })),
  ); // prettier-ignore
}

export { KIND_LABEL, STATE_LABEL };
