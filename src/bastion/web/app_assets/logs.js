// Logs: show only the date fields of the chosen period.
const period = document.getElementById("period");

function sync() {
  for (const label of document.querySelectorAll("[data-period]")) {
    const shown = label.dataset.period === period.value;
    label.hidden = !shown;
    for (const input of label.querySelectorAll("input")) input.disabled = !shown;
  }
}

if (period) {
  period.addEventListener("change", sync);
  sync();
}
