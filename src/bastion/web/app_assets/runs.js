// Runs list: status cells follow the live feed; new matching runs are announced.
import { badge, timeElement } from "/app/console.js";
import { openStream } from "/app/live.js";

const table = document.getElementById("runs-table");
const banner = document.getElementById("new-runs");
const params = new URLSearchParams(location.search);
const onFirstPage = !params.get("before");
const fresh = new Set();

function matches(run) {
  for (const [param, field] of [["status", "status"], ["workflow", "workflow_id"], ["trigger", "trigger"]]) {
    const wanted = params.get(param);
    if (wanted && run[field] !== wanted) return false;
  }
  const ws = params.get("ws");
  return !ws || String(run.workspace_id) === ws;
}

function update(run) {
  const row = table ? table.querySelector(`tr[data-run="${CSS.escape(run.id)}"]`) : null;
  if (row) {
    row.querySelector(".status-cell").replaceChildren(badge("status", run.status));
    row.querySelector(".finished-cell").replaceChildren(timeElement(run.finished_at));
    return;
  }
  if (!onFirstPage || !matches(run) || params.get("until")) return;
  fresh.add(run.id);
  banner.querySelector("span").textContent =
    `${fresh.size} new run${fresh.size === 1 ? "" : "s"} since this page loaded.`;
  banner.querySelector("a").setAttribute("href", location.pathname + location.search);
  banner.hidden = false;
}

const ws = params.get("ws");
openStream(`/api/v1/runs:stream${ws ? `?workspace_id=${encodeURIComponent(ws)}` : ""}`, {
  onEvent(name, data) { if (name === "run") update(data); },
});
