// One run: steps appear live while it runs; cancel and replay.
import { badge, call, clearError, el, notify, showError, timeElement } from "/app/console.js";
import { openStream } from "/app/live.js";

const section = document.getElementById("run");
const runId = section.dataset.run;
const errorBox = section.querySelector(".form-error");
const cancelButton = document.getElementById("cancel-run");
const replayButton = document.getElementById("replay-run");
const steps = document.querySelector("#steps tbody");
const NS = "http://www.w3.org/2000/svg";

function pretty(value) {
  return value === null || value === undefined ? "—" : JSON.stringify(value, null, 2);
}

// Each bar starts at the step's offset into the run and lasts as long as the step did.
function rescaleBars() {
  const rows = [...steps.querySelectorAll("tr[data-start]")].map((row) => ({
    row, start: Number(row.dataset.start), ms: Number(row.querySelector("td[data-ms]").dataset.ms) || 0,
  }));
  if (!rows.length) return;
  const first = Math.min(...rows.map((r) => r.start));
  const span = Math.max(1, ...rows.map((r) => r.start + r.ms - first));
  for (const { row, start, ms } of rows) {
    const rect = row.querySelector("svg.bar rect");
    const x = Math.min(99.5, ((start - first) / span) * 100);
    rect.setAttribute("x", x.toFixed(2));
    rect.setAttribute("width", Math.max(0.5, Math.min(100 - x, (ms / span) * 100)).toFixed(2));
  }
}

function addStep(step) {
  if (steps.querySelector(`tr[data-seq="${step.seq}"]`)) return;
  document.getElementById("no-steps")?.remove();
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "bar");
  svg.setAttribute("viewBox", "0 0 100 8");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const rect = document.createElementNS(NS, "rect");
  for (const [k, v] of Object.entries({ x: 0, y: 0, height: 8, width: 1, class: `status-${step.status}` })) rect.setAttribute(k, String(v));
  svg.append(rect);
  const ms = Math.round(step.duration_ms * 10) / 10;
  steps.append(el("tr", { "data-seq": step.seq, "data-start": new Date(step.started_at).getTime() },
    el("td", {}, step.seq), el("th", { scope: "row" }, step.node), el("td", {}, badge("status", step.status)),
    el("td", {}, timeElement(step.started_at)), el("td", { class: "num", "data-ms": ms }, `${ms} ms`),
    el("td", { class: "bar-col" }, svg)));
  if (step.error || step.output !== null) {
    const detail = el("td", { colspan: 5 });
    if (step.error) detail.append(el("p", { class: "bad" }, step.error));
    if (step.output !== null && step.output !== undefined) {
      detail.append(el("details", {}, el("summary", {}, `Output of ${step.node}`), el("pre", {}, pretty(step.output))));
    }
    steps.append(el("tr", { class: "step-detail" }, el("td"), detail));
  }
  rescaleBars();
}

async function refresh() {
  const run = await call("GET", `/runs/${encodeURIComponent(runId)}`);
  document.getElementById("run-status").replaceChildren(badge("status", run.status));
  document.getElementById("run-started").replaceChildren(timeElement(run.started_at));
  document.getElementById("run-finished").replaceChildren(timeElement(run.finished_at));
  document.getElementById("run-output").textContent = pretty(run.output);
  for (const step of run.steps) addStep(step);
  if (run.error) {
    document.getElementById("run-error").textContent = run.error;
    document.getElementById("run-failure").textContent = run.failure ? `[${run.failure}] ` : "";
    document.getElementById("error-section").hidden = false;
  }
  const active = ["scheduled", "queued", "running"].includes(run.status);
  if (cancelButton) cancelButton.hidden = !active;
  document.getElementById("live-note").hidden = !active;
  return run;
}

if (section.dataset.live === "true") {
  openStream(`/api/v1/runs/${encodeURIComponent(runId)}/events`, {
    lastEventId: section.dataset.lastSeq,
    onOpen() { refresh().catch(() => {}); },
    onEvent(name, data) {
      if (name === "step") {
        addStep(data);
        document.getElementById("run-status").replaceChildren(badge("status", "running"));
      } else if (name === "end") {
        refresh().then((run) => notify(`Run ${run.status}.`)).catch(() => {});
        return false;
      }
      return true;
    },
  });
}

cancelButton?.addEventListener("click", async () => {
  if (!window.confirm("Cancel this run (and any retry waiting to follow it)?")) return;
  clearError(errorBox);
  try {
    await call("POST", `/runs/${encodeURIComponent(runId)}/cancel`);
    notify("Cancellation requested: the run stops at its next step.");
  } catch (error) { showError(errorBox, error); }
});

replayButton?.addEventListener("click", async () => {
  clearError(errorBox);
  try {
    const run = await call("POST", `/runs/${encodeURIComponent(runId)}/replay`);
    window.location.assign(`/runs/${encodeURIComponent(run.id)}`);
  } catch (error) { showError(errorBox, error); }
});
