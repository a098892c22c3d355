// A rotation pool, live: replica state and health from the status stream, sparklines,
// a timeline of the active replica, and the controls (buttons follow the state machine;
// a refused action shows the server's reason).
import { badge, call, clearError, notify, showError } from "/app/console.js";
import { sparkline, svgEl } from "/app/charts.js";
import { openStream } from "/app/live.js";

const section = document.getElementById("pool");
const pool = section.dataset.pool;
const enc = encodeURIComponent;
const errorBox = document.getElementById("control-error");
const WINDOW_MS = 30 * 60 * 1000;
const SERIES = 30;
const series = {}; // replica -> {cpu: [], mem: [], net: []}
const samples = []; // {at, active, health}
let status = null;

function merge(target, change) {
  for (const [key, value] of Object.entries(change)) {
    if (value === null) delete target[key];
    else if (typeof value === "object" && !Array.isArray(value) && typeof target[key] === "object" && target[key] !== null) merge(target[key], value);
    else target[key] = value;
  }
  return target;
}

function human(bytes) {
  if (typeof bytes !== "number") return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function uptime(started) {
  if (!started) return "—";
  const seconds = Math.max(0, Math.round((Date.now() - new Date(started).getTime()) / 1000));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60);
  return h ? `${h} h ${m} min` : `${m} min ${seconds % 60} s`;
}

function push(list, value) {
  list.push(value);
  if (list.length > SERIES) list.shift();
}

function record(name, replica) {
  const s = series[name] || (series[name] = { cpu: [], mem: [], net: [] });
  push(s.cpu, replica.cpu_percent);
  push(s.mem, replica.memory_bytes);
  push(s.net, typeof replica.rx_bytes === "number" ? replica.rx_bytes + (replica.tx_bytes || 0) : null);
}

function buttons() {
  const state = status ? status.state : section.dataset.state;
  const pending = status ? status.pending_action : section.dataset.pending || null;
  const allowed = {
    pause: state === "running" && pending !== "kill",
    resume: state !== "running" && pending !== "kill",
    rotate: pending !== "rotate" && pending !== "kill",
    kill: state === "paused" && pending !== "kill",
  };
  for (const button of section.querySelectorAll("[data-action]")) {
    button.disabled = !allowed[button.dataset.action];
    if (button.dataset.action === "rotate") {
      button.textContent = state === "running" ? "Rotate now" : "Rotate anyway (forced)";
    }
  }
}

function render() {
  if (!status) return;
  document.getElementById("pool-state").textContent = status.state;
  document.getElementById("pool-active").textContent = status.active_replica || "—";
  document.getElementById("pool-healthy").textContent = String(status.healthy);
  document.getElementById("pool-pending").textContent = status.pending_action || "—";
  document.getElementById("pool-count").textContent = String(status.rotation_count);
  const next = document.getElementById("pool-next");
  if (status.next_rotation_at && !status.paused) {
    next.classList.add("countdown");
    next.dataset.at = status.next_rotation_at;
  } else {
    next.classList.remove("countdown");
    next.textContent = status.paused ? "none while paused" : "not scheduled";
  }
  for (const [name, replica] of Object.entries(status.replicas || {})) {
    const row = document.querySelector(`tr[data-replica="${CSS.escape(name)}"]`);
    if (!row) continue;
    row.querySelector(".r-state").replaceChildren(replica.active ? badge("status", "running") : document.createTextNode(replica.state));
    row.querySelector(".r-health").replaceChildren(badge("health", replica.health));
    row.querySelector(".r-uptime").textContent = uptime(replica.started_at);
    row.querySelector(".r-activations").textContent = String(replica.activations);
    const s = series[name] || { cpu: [], mem: [], net: [] };
    sparkline(row.querySelector(".r-cpu"), s.cpu, `CPU % of ${name}`);
    sparkline(row.querySelector(".r-mem"), s.mem, `memory of ${name}`);
    sparkline(row.querySelector(".r-net"), s.net, `network bytes of ${name}`);
    row.querySelector(".r-cpu-text").textContent = typeof replica.cpu_percent === "number" ? `${replica.cpu_percent.toFixed(1)} %` : "";
    row.querySelector(".r-mem-text").textContent = human(replica.memory_bytes);
    row.querySelector(".r-net-text").textContent = typeof replica.rx_bytes === "number" ? `${human(replica.rx_bytes)} in` : "";
  }
  buttons();
  drawTimeline();
}

function observe() {
  if (!status) return;
  const active = status.active_replica;
  const health = active && status.replicas[active] ? status.replicas[active].health : "unknown";
  samples.push({ at: Date.now(), active, health });
  for (const [name, replica] of Object.entries(status.replicas || {})) record(name, replica);
  while (samples.length && samples[0].at < Date.now() - WINDOW_MS) samples.shift();
}

function switches() {
  // From the server's history (newest first in the table): when each replica took over.
  return [...document.querySelectorAll("#history tr[data-history]")]
    .filter((row) => row.dataset.outcome === "ok" && row.dataset.to)
    .map((row) => ({ at: new Date(row.dataset.at).getTime(), active: row.dataset.to }))
    .reverse();
}

function drawTimeline() {
  const svg = document.getElementById("timeline");
  const names = [...document.querySelectorAll("tr[data-replica]")].map((row) => row.dataset.replica);
  const now = Date.now(), start = now - WINDOW_MS, left = 110, width = 720 - left - 6;
  const x = (t) => left + ((Math.max(t, start) - start) / WINDOW_MS) * width;
  svg.replaceChildren();
  names.forEach((name, i) => {
    svg.append(svgEl("text", { x: 4, y: 20 + i * 22 + 11 }, name.length > 16 ? `${name.slice(0, 15)}…` : name));
  });
  for (let m = 0; m <= 30; m += 10) {
    svg.append(svgEl("text", { x: x(now - m * 60000), y: 10, "text-anchor": m ? "middle" : "end" }, m ? `-${m} min` : "now"));
  }
  // Past switches, then the live samples (which carry health) from when the page opened.
  const points = [...switches().map((s) => ({ ...s, health: "healthy", past: true })), ...samples];
  points.sort((a, b) => a.at - b.at);
  points.forEach((point, index) => {
    const end = index + 1 < points.length ? points[index + 1].at : now;
    if (end < start || !point.active) return;
    const row = names.indexOf(point.active);
    if (row < 0) return;
    const health = point.past ? "healthy" : point.health;
    const kind = health === "healthy" ? "active-healthy" : health === "unhealthy" ? "active-unhealthy" : "active-unknown";
    const rect = svgEl("rect", { x: x(point.at), y: 20 + row * 22, width: Math.max(1, x(end) - x(point.at)), height: 14, class: kind });
    rect.append(svgEl("title", {}, `${point.active}: ${health}`));
    svg.append(rect);
  });
}

async function act(action, force = false) {
  clearError(errorBox);
  try {
    const answer = await call("POST", `/rotation/pools/${enc(pool)}/actions`, { action, force });
    notify(`${action} accepted: the pool is ${answer.state}${answer.pending_action ? `, ${answer.pending_action} pending` : ""}.`);
    if (status) { status.state = answer.state; status.pending_action = answer.pending_action; }
    section.dataset.state = answer.state;
    section.dataset.pending = answer.pending_action || "";
    render();
    buttons();
  } catch (error) {
    showError(errorBox, error.status === 409 ? `Refused: ${error.message}` : error);
  }
}

section.addEventListener("click", (event) => {
  const button = event.target.closest("[data-action]");
  if (!button) return;
  const action = button.dataset.action;
  const state = status ? status.state : section.dataset.state;
  if (action === "kill") {
    const dialog = document.getElementById("kill-dialog");
    document.getElementById("kill-confirm").value = "";
    document.getElementById("kill-submit").disabled = true;
    dialog.showModal();
  } else if (action === "rotate" && state !== "running") {
    if (window.confirm(`Pool ${pool} is ${state}. Rotate it anyway?`)) act("rotate", true);
  } else {
    act(action);
  }
});

document.getElementById("kill-confirm")?.addEventListener("input", (event) => {
  document.getElementById("kill-submit").disabled = event.target.value !== pool;
});
document.getElementById("kill-form")?.addEventListener("submit", (event) => {
  event.preventDefault();
  if (document.getElementById("kill-confirm").value !== pool) return;
  document.getElementById("kill-dialog").close();
  act("kill");
});

async function start() {
  try {
    const detail = await call("GET", `/rotation/pools/${enc(pool)}`);
    for (const [name, replica] of Object.entries(detail.replicas || {})) {
      const s = series[name] = { cpu: [], mem: [], net: [] };
      for (const sample of (replica.stats_series || []).slice(-SERIES)) {
        s.cpu.push(sample.cpu_percent);
        s.mem.push(sample.memory_bytes);
        s.net.push(typeof sample.rx_bytes === "number" ? sample.rx_bytes + (sample.tx_bytes || 0) : null);
      }
    }
    status = detail;
    render();
  } catch { /* the stream below fills the page */ }
  openStream("/api/v1/rotation/stream", {
    onEvent(name, data) {
      if (!data || !data.pools) return;
      if (name === "snapshot" && data.pools[pool]) status = data.pools[pool];
      else if (name === "delta" && data.pools[pool] && status) merge(status, data.pools[pool]);
      else return;
      observe();
      render();
    },
  });
}

buttons();
drawTimeline();
start();
setInterval(drawTimeline, 15000);
