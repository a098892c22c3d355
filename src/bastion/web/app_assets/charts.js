// Charts drawn as SVG by Bastion's own code: colours come from CSS classes, so nothing
// needs an inline style.
const NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attributes = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Stacked bars, one per bucket: data = {statuses: [...], buckets: [{start, counts}]}.
export function drawBars(svg, data) {
  const width = 720, height = 180, left = 30, bottom = 18, top = 8;
  svg.replaceChildren();
  const buckets = data.buckets || [];
  const max = Math.max(1, ...buckets.map((b) => Object.values(b.counts).reduce((a, c) => a + c, 0)));
  const slot = (width - left - 4) / Math.max(1, buckets.length);
  const scale = (height - bottom - top) / max;
  svg.append(svgEl("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }));
  svg.append(svgEl("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, String(max)));
  svg.append(svgEl("text", { x: left - 4, y: height - bottom, "text-anchor": "end" }, "0"));
  buckets.forEach((bucket, index) => {
    const x = left + index * slot + 1;
    let y = height - bottom;
    const parts = [];
    for (const status of data.statuses) {
      const count = bucket.counts[status] || 0;
      if (!count) continue;
      parts.push(`${count} ${status}`);
      const h = Math.max(1, count * scale);
      y -= h;
      svg.append(svgEl("rect", { x, y, width: Math.max(1, slot - 2), height: h, class: `status-${status}` }));
    }
    const hour = bucket.start.slice(11, 16);
    const hit = svgEl("rect", { x, y: top, width: Math.max(1, slot - 2), height: height - bottom - top, fill: "transparent" });
    hit.append(svgEl("title", {}, `${hour} UTC: ${parts.join(", ") || "no runs"}`));
    svg.append(hit);
    if (index % 3 === 0) {
      svg.append(svgEl("text", { x: x + slot / 2, y: height - 4, "text-anchor": "middle" }, hour));
    }
  });
}

// A small line over the last values (CPU, memory, network).
export function sparkline(svg, values, label = "") {
  svg.replaceChildren();
  const width = 100, height = 24;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  if (label) svg.append(svgEl("title", {}, label));
  const numbers = values.filter((v) => typeof v === "number" && Number.isFinite(v));
  if (numbers.length < 2) return;
  const max = Math.max(...numbers), min = Math.min(...numbers);
  const span = max - min || 1;
  const step = width / (numbers.length - 1);
  const points = numbers.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - ((v - min) / span) * (height - 4)).toFixed(1)}`);
  svg.append(svgEl("polyline", { points: points.join(" ") }));
}

export { svgEl };
