// Settings: end sessions, revoke and create API tokens.
import { call, clearError, notify, reloadSoon, showError } from "/app/console.js";

const enc = encodeURIComponent;
const pageError = document.getElementById("settings-error");

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-end-session], [data-end-all], [data-revoke]");
  if (!button) return;
  const d = button.dataset;
  clearError(pageError);
  try {
    if (d.endSession) {
      if (!window.confirm("End this session? Whoever uses it is signed out at once.")) return;
      await call("DELETE", `/sessions/${enc(d.endSession)}?user_id=${enc(d.user)}`);
      button.closest("tr").remove();
      notify("Session ended.");
    } else if (d.endAll) {
      if (!window.confirm(`End every session of ${d.username}, on every server?`)) return;
      await call("DELETE", `/users/${enc(d.endAll)}/sessions`);
      reloadSoon(`Every session of ${d.username} ended.`);
    } else if (d.revoke) {
      if (!window.confirm(`Revoke the token "${d.name}"? Programs using it stop working.`)) return;
      await call("DELETE", `/tokens/${enc(d.revoke)}`);
      reloadSoon(`Token ${d.name} revoked.`);
    }
  } catch (error) { showError(pageError, error); }
});

const tokenForm = document.getElementById("token-form");
tokenForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = tokenForm.querySelector(".form-error");
  clearError(box);
  const f = tokenForm.elements;
  try {
    const created = await call("POST", "/tokens", {
      name: f.name.value,
      workspace_id: Number(f.workspace_id.value),
      role: f.role.value,
      expires_in_days: Number(f.expires_in_days.value),
    });
    const shown = document.getElementById("new-token");
    shown.querySelector("code").textContent = created.token;
    shown.hidden = false;
    tokenForm.querySelector("button[type=submit]").disabled = true;
  } catch (error) { showError(box, error); }
});
