// Overview: the 24-hour runs chart, redrawn when runs change; pool countdowns.
import { call } from "/app/console.js";
import { drawBars } from "/app/charts.js";
import { openStream } from "/app/live.js";

const svg = document.getElementById("runs-chart");

function show(data) {
  drawBars(svg, data);
  for (const [status, count] of Object.entries(data.totals || {})) {
    const cell = document.querySelector(`[data-total="${status}"]`);
    if (cell) cell.textContent = String(count);
  }
  const total = Object.values(data.totals || {}).reduce((a, c) => a + c, 0);
  document.getElementById("runs-total").textContent =
    `${total} runs, per hour (UTC), stacked by status.`;
}

if (svg) {
  // The first figures come with the page (tojson, in a single-quoted attribute).
  show(JSON.parse(svg.dataset.chart));
  let timer = null;
  openStream("/api/v1/runs:stream", {
    onEvent(name) {
      if (name !== "run" || timer) return;
      timer = setTimeout(async () => {
        timer = null;
        try { show(await call("GET", "/stats/runs?hours=24")); } catch { /* next event retries */ }
      }, 1500);
    },
  });
}


// Pools: healthy counts and active replicas from the rotation status stream.
const pools = {};
function mergeInto(target, change) {
  for (const [key, value] of Object.entries(change)) {
    if (value === null) delete target[key];
    else if (typeof value === "object" && !Array.isArray(value) && target[key] && typeof target[key] === "object") mergeInto(target[key], value);
    else target[key] = value;
  }
}
if (document.querySelector("[data-healthy]")) {
  openStream("/api/v1/rotation/stream", {
    onEvent(name, data) {
      if (!data || !data.pools) return;
      if (name === "snapshot") Object.assign(pools, data.pools);
      else if (name === "delta") mergeInto(pools, data.pools);
      for (const [poolName, pool] of Object.entries(pools)) {
        const healthy = document.querySelector(`[data-healthy="${CSS.escape(poolName)}"]`);
        if (healthy) healthy.textContent = String(pool.healthy);
        const active = document.querySelector(`[data-active="${CSS.escape(poolName)}"]`);
        if (active) active.textContent = pool.active_replica || "—";
        const row = document.querySelector(`tr[data-pool="${CSS.escape(poolName)}"] .countdown`);
        if (row && pool.next_rotation_at) row.dataset.at = pool.next_rotation_at;
      }
    },
  });
}
