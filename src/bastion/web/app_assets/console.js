// The console bundle (served only to signed-in users): API calls with the session's CSRF
// token, messages, the offline banner and its heartbeat. Page modules import from here.
// Text from the server is only ever set with textContent, never as HTML.
const meta = document.querySelector('meta[name="csrf-token"]');
let leaving = false;
window.addEventListener("pagehide", () => { leaving = true; });
window.addEventListener("beforeunload", () => { leaving = true; });

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `the server answered ${status}`);
    this.status = status;
    this.body = body;
  }
}

function toLogin() {
  window.location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
}

export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (meta) headers.set("X-CSRF-Token", meta.content);
  if (options.body && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
  let response;
  try {
    response = await fetch(`/api/v1${path}`, { ...options, headers, credentials: "same-origin" });
  } catch (error) {
    if (!leaving) connection.down();
    throw error;
  }
  connection.up();
  if (response.status === 401) toLogin();
  return response;
}

// JSON in, JSON out; an answer >= 400 throws ApiError carrying the server's message.
export async function call(method, path, body) {
  const response = await api(path, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let detail = null;
    try { detail = await response.json(); } catch { detail = null; }
    throw new ApiError(response.status, detail);
  }
  return response.status === 204 ? null : response.json();
}

export function showError(target, error) {
  const text = error instanceof Error ? error.message : String(error);
  if (target) {
    target.textContent = text;
    target.hidden = false;
  } else {
    notify(text, "error");
  }
}

export function clearError(target) {
  if (target) { target.textContent = ""; target.hidden = true; }
}

let noticeTimer = null;
export function notify(text, kind = "info") {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = text;
  box.classList.toggle("error", kind === "error");
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, 8000);
}

export function reloadSoon(text) {
  if (text) sessionStorage.setItem("bastion-notice", text);
  window.location.reload();
}

// Builds an element with text children only: no HTML parsing of server data.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

export function badge(kind, value) {
  return el("span", { class: `badge ${kind}-${value}`, "data-status": value }, value);
}

export function formatTime(iso) {
  if (!iso) return "—";
  const moment = new Date(iso);
  return Number.isNaN(moment.getTime()) ? String(iso) : moment.toISOString().slice(0, 19).replace("T", " ");
}

export function timeElement(iso) {
  return iso ? el("time", { datetime: iso, title: iso }, formatTime(iso)) : document.createTextNode("—");
}

// -- connection state: the offline banner, a heartbeat with back-off ---------------------
const HEARTBEAT_MS = 30000;
const BACKOFF_MAX_MS = 30000;
let retryDelay = 2000;
let heartbeat = null;

export const connection = {
  online: true,
  down() {
    if (leaving) return;
    this.online = false;
    const banner = document.getElementById("offline");
    if (banner) banner.hidden = false;
    schedule(retryDelay);
    retryDelay = Math.min(retryDelay * 2, BACKOFF_MAX_MS);
  },
  up() {
    this.online = true;
    retryDelay = 2000;
    const banner = document.getElementById("offline");
    if (banner) banner.hidden = true;
  },
};

function schedule(delay) {
  clearTimeout(heartbeat);
  heartbeat = setTimeout(ping, delay * (0.75 + Math.random() / 4));
}

async function ping() {
  try {
    const response = await fetch("/healthz", { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(String(response.status));
    connection.up();
    schedule(HEARTBEAT_MS);
  } catch {
    connection.down();
  }
}

window.addEventListener("offline", () => connection.down());
window.addEventListener("online", () => { ping(); });
schedule(HEARTBEAT_MS);

// -- small page conveniences -------------------------------------------------------------
// Any `.countdown[data-at]` shows the time left until its instant, every second.
function countdowns() {
  for (const node of document.querySelectorAll(".countdown[data-at]")) {
    const at = new Date(node.dataset.at);
    const seconds = Math.round((at.getTime() - Date.now()) / 1000);
    if (Number.isNaN(seconds)) continue;
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60);
    node.textContent = seconds > 0 ? `in ${h ? `${h} h ` : ""}${m} min ${seconds % 60} s` : "due now";
    node.title = `${formatTime(node.dataset.at)} UTC`;
  }
}
countdowns();
setInterval(countdowns, 1000);

document.addEventListener("click", (event) => {
  const closer = event.target.closest("[data-close]");
  if (closer) closer.closest("dialog")?.close();
});

const pending = sessionStorage.getItem("bastion-notice");
if (pending) {
  sessionStorage.removeItem("bastion-notice");
  notify(pending);
}
