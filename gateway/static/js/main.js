// The dashboard page: login with an [[admins]] token, one snapshot over HTTP, then a
// WebSocket that pushes a fresh snapshot about once a second (see gateway/dashboard.py).
//
// The token lives in sessionStorage (gone with the tab), or in localStorage when
// "keep me signed in on this screen" is ticked — what a wallboard wants. Viewer tokens
// work everywhere here: the dashboard only reads.

import { Detail } from "./detail.js";
import { MapView, Outline } from "./map.js";
import { renderAgents, renderIngest, renderQueues, renderRegions, renderSessions, renderTopics, ticker } from "./panels.js";
import { clock, h } from "./util.js";

const KEY = "telacd.dashboard.token";
const $ = (sel) => document.querySelector(sel);

const state = {
  token: null,
  viewer: null,
  socket: null,
  retry: 0,
  offset: 0, // server clock - local clock, seconds
  snap: null,
  map: null,
  outline: null,
  detail: null,
};

const serverNow = () => Date.now() / 1000 + state.offset;

class AuthError extends Error {}

/** GET a dashboard endpoint with the token; throws AuthError on 401 (message from the gateway). */
async function api(path, token = state.token) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  if (r.status === 401 || r.status === 403) {
    let message = `HTTP ${r.status}`;
    try {
      message = (await r.json()).message || message;
    } catch {
      /* not JSON: keep the status */
    }
    throw new AuthError(message);
  }
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// -- login -----------------------------------------------------------------------------------

function showLogin(message = "") {
  closeSocket();
  $("#board").hidden = true;
  $("#login").hidden = false;
  const err = $("#login-error");
  err.textContent = message;
  err.hidden = !message;
  $("#token").focus();
}

async function login(token, remember) {
  let snap;
  try {
    snap = await api("/api/dashboard", token);
  } catch (e) {
    if (e instanceof AuthError) {
      showLogin(e.message === "unknown token" ? "That token is not an [[admins]] token of this gateway." : e.message);
    } else {
      showLogin(`Cannot reach the gateway (${e.message}).`);
    }
    return false;
  }
  state.token = token;
  sessionStorage.setItem(KEY, token);
  if (remember) localStorage.setItem(KEY, token);
  state.viewer = snap.viewer;
  $("#login").hidden = true;
  $("#board").hidden = false;
  const who = $("#viewer");
  who.textContent = `${snap.viewer.id} · ${snap.viewer.role === "admin" ? "admin" : "read-only"}`;
  who.dataset.role = snap.viewer.role;
  if (!state.outline) {
    state.outline = await Outline.load();
    state.map = new MapView($("#map"), state.outline, openSession);
  }
  render(snap);
  connect();
  return true;
}

function logout() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
  state.token = null;
  state.detail.close();
  showLogin("");
}

// -- live updates ----------------------------------------------------------------------------

function closeSocket() {
  if (state.socket) {
    state.socket.onclose = null;
    state.socket.close();
    state.socket = null;
  }
}

function setStatus(kind, text) {
  const el = $("#status");
  el.dataset.status = kind;
  el.textContent = text;
}

function connect() {
  closeSocket();
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/api/dashboard/live?token=${encodeURIComponent(state.token)}`);
  state.socket = ws;
  ws.onopen = () => {
    state.retry = 0;
    setStatus("live", "live");
  };
  ws.onmessage = (ev) => {
    const snap = JSON.parse(ev.data);
    if (snap.type === "snapshot") render(snap);
  };
  ws.onclose = async (ev) => {
    state.socket = null;
    if (ev.code === 4001) {
      showLogin("Your token was removed from the gateway's configuration.");
      return;
    }
    setStatus("down", "reconnecting…");
    const delay = Math.min(10000, 500 * 2 ** state.retry++);
    setTimeout(async () => {
      if (!state.token) return;
      try {
        await api("/api/dashboard"); // tells a revoked token (401) from a gateway that is away
        connect();
      } catch (e) {
        if (e instanceof AuthError) showLogin("Your token is no longer accepted.");
        else connect();
      }
    }, delay);
  };
}

// -- rendering -------------------------------------------------------------------------------

function render(snap) {
  state.snap = snap;
  state.offset = snap.now - Date.now() / 1000;
  document.title = `${snap.name} · operations`;
  $("#gw-name").textContent = snap.name;
  const updated = $("#updated");
  updated.textContent = `updated ${clock(snap.now)}`;
  updated.dataset.at = String(snap.now);
  renderIngest($("#ingest"), snap);
  renderQueues($("#queues tbody"), snap);
  renderAgents($("#agents"), $("#agent-summary"), snap);
  renderSessions($("#sessions tbody"), snap, state.detail.sid);
  renderRegions($("#regions"), snap);
  renderTopics($("#topics"), snap);
  $("#map-count").textContent = `${snap.map.online} online${snap.map.sampled ? " (sampled)" : ""} · ${snap.sessions.length} alerts`;
  if (state.map) state.map.update(snap);
  ticker(document, serverNow);
}

function openSession(sid) {
  state.map?.select(sid);
  for (const row of document.querySelectorAll("#sessions tr.session")) row.classList.toggle("selected", row.dataset.sid === sid);
  state.detail.open(sid);
}

// -- start -----------------------------------------------------------------------------------

function start() {
  state.detail = new Detail($("#detail"), (path) => api(path), () => {
    state.map?.select(null);
    for (const row of document.querySelectorAll("#sessions tr.selected")) row.classList.remove("selected");
  });
  $("#login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("#token").value.trim();
    if (!token) {
      showLogin("Enter a token.");
      return;
    }
    login(token, $("#remember").checked);
  });
  $("#logout").addEventListener("click", logout);
  $("#sessions tbody").addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-sid]");
    if (row) openSession(row.dataset.sid);
  });
  $("#sessions tbody").addEventListener("keydown", (e) => {
    const row = e.target.closest("tr[data-sid]");
    if (row && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      openSession(row.dataset.sid);
    }
  });
  for (const button of document.querySelectorAll("[data-map-mode]")) {
    button.addEventListener("click", () => {
      for (const b of document.querySelectorAll("[data-map-mode]")) b.setAttribute("aria-pressed", String(b === button));
      state.map?.setMode(button.dataset.mapMode);
    });
  }
  setInterval(() => ticker(document, serverNow), 1000);
  const saved = sessionStorage.getItem(KEY) || localStorage.getItem(KEY);
  if (saved) login(saved, Boolean(localStorage.getItem(KEY)));
  else showLogin();
}

start();
