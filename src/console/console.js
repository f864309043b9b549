// The live console: one WebSocket (GET /api/v1/ws, SPEC §7) for activity and alerts, REST for
// the snapshot it starts from and for acknowledging and resolving alerts. No build step, no
// dependency: the binary serves this file as it is.
"use strict";

const KEPT_ROWS = 200;
const store = window.sessionStorage;
const $ = (id) => document.getElementById(id);

let socket = null;
let retryDelay = 500;
let retryTimer = null;
// Events that arrive while a snapshot loads wait here, so the snapshot cannot wipe them.
let waiting = null;
// The last event received, to resume from after a reconnect (or a page reload).
let position = JSON.parse(store.getItem("cc.position") || "null");

function credentials() {
  return { token: store.getItem("cc.token"), tenant: store.getItem("cc.tenant") };
}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function showError(text) {
  const error = $("error");
  error.textContent = text || "";
  error.hidden = !text;
}

async function api(method, path) {
  const { token, tenant } = credentials();
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}`, "X-Tenant-ID": tenant },
  });
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) {
    throw new Error(body && body.detail ? body.detail : `${method} ${path}: ${response.status}`);
  }
  return body;
}

function cell(text, wrap) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (wrap) td.className = "wrap";
  return td;
}

function time(value) {
  return value ? new Date(value).toLocaleTimeString() : "";
}

function addActivity(activity, fresh) {
  const body = $("activity").tBodies[0];
  if (body.querySelector(`tr[data-id="${activity.id}"]`)) return;
  const row = document.createElement("tr");
  row.dataset.id = activity.id;
  row.dataset.action = activity.action;
  if (fresh) row.className = "fresh";
  const resource = activity.resource_type
    ? `${activity.resource_type} ${activity.resource_id || ""}`
    : "";
  row.append(
    cell(time(activity.created_at)),
    cell(activity.action),
    cell(activity.status),
    cell(activity.method && activity.route ? `${activity.method} ${activity.route}` : ""),
    cell(activity.actor || activity.actor_type),
    cell(resource, true),
  );
  body.prepend(row);
  while (body.rows.length > KEPT_ROWS) body.deleteRow(body.rows.length - 1);
}

function action(label, verb, alert) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.dataset.action = verb;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      showAlert(await api("POST", `/api/v1/monitoring/alerts/${alert.id}/${verb}`), false);
      showError("");
    } catch (e) {
      showError(e.message);
      button.disabled = false;
    }
  });
  return button;
}

function showAlert(alert, fresh) {
  const body = $("alerts").tBodies[0];
  let row = body.querySelector(`tr[data-alert-id="${alert.id}"]`);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.alertId = alert.id;
    body.prepend(row);
  }
  row.dataset.status = alert.status;
  row.dataset.severity = alert.severity;
  row.className = fresh ? "fresh" : "";
  const actions = document.createElement("td");
  if (alert.status === "firing") actions.append(action("Acknowledge", "acknowledge", alert));
  if (alert.status !== "resolved") actions.append(action("Resolve", "resolve", alert));
  row.replaceChildren(
    cell(alert.severity),
    cell(alert.status),
    cell(alert.group_key ? `${alert.rule_id} (${alert.group_key})` : alert.rule_id, true),
    cell(alert.event_count),
    cell(time(alert.last_event_at)),
    actions,
  );
}

function apply(event) {
  if (event.channel === "activity") addActivity(event.data, true);
  else if (event.channel === "alerts") showAlert(event.data, true);
}

// What REST says now: the start, and what a `reset` falls back to.
async function snapshot() {
  waiting = waiting || [];
  try {
    const [activities, alerts] = await Promise.all([
      api("GET", "/api/v1/activities?limit=50"),
      api("GET", "/api/v1/monitoring/alerts?limit=50"),
    ]);
    $("activity").tBodies[0].replaceChildren();
    $("alerts").tBodies[0].replaceChildren();
    for (const a of activities.items.slice().reverse()) addActivity(a, false);
    for (const a of alerts.items.slice().reverse()) showAlert(a, false);
    showError("");
  } catch (e) {
    showError(e.message);
  } finally {
    const queued = waiting;
    waiting = null;
    queued.forEach(apply);
  }
}

function remember(epoch, offset) {
  position = { epoch, offset };
  store.setItem("cc.position", JSON.stringify(position));
}

function connect() {
  const { token, tenant } = credentials();
  if (!token || !tenant) return;
  clearTimeout(retryTimer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/api/v1/ws`);
  const resumed = position !== null;
  socket.onopen = () => {
    const auth = { type: "auth", token, tenant_id: tenant };
    if (resumed) auth.resume = position;
    socket.send(JSON.stringify(auth));
  };
  socket.onmessage = async (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "ready") {
      retryDelay = 500;
      setStatus("live", `live: ${event.channels.join(", ")}`);
      showError("");
      if (!resumed) {
        remember(event.epoch, event.offset);
        await snapshot();
      } else if (position.epoch !== event.epoch) {
        // Another stream (a restart, another instance): a `reset` follows.
        remember(event.epoch, event.offset);
      }
    } else if (event.type === "reset") {
      await snapshot();
    } else if (event.type === "event") {
      remember(event.epoch, event.offset);
      if (waiting) waiting.push(event);
      else apply(event);
    }
  };
  socket.onclose = (close) => {
    socket = null;
    if (close.code === 4401 || close.code === 4403) {
      setStatus("failed", "refused");
      showError(close.code === 4401 ? "The token was refused." : "No access to this tenant.");
      return;
    }
    setStatus("reconnecting", "reconnecting");
    retryTimer = setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 5000);
  };
}

function start(event) {
  event.preventDefault();
  store.setItem("cc.token", $("token").value.trim());
  store.setItem("cc.tenant", $("tenant").value.trim());
  store.removeItem("cc.position");
  position = null;
  if (socket) {
    socket.onclose = null;
    socket.close(1000);
  }
  connect();
}

function forget() {
  store.clear();
  position = null;
  if (socket) socket.close(1000);
  setStatus("idle", "not connected");
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", start);
  $("logout").addEventListener("click", forget);
  // A link may carry the credentials in its fragment (never sent to the server):
  // /console#token=...&tenant=...
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token") && fragment.get("tenant")) {
    store.setItem("cc.token", fragment.get("token"));
    store.setItem("cc.tenant", fragment.get("tenant"));
    history.replaceState(null, "", location.pathname);
  }
  const { token, tenant } = credentials();
  if (token && tenant) {
    $("token").value = token;
    $("tenant").value = tenant;
    connect();
  }
});
