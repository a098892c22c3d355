// A workflow: run it now, manage its triggers, set a webhook's secret, its retry policy.
import { call, clearError, reloadSoon, showError } from "/app/console.js";

const enc = encodeURIComponent;

function errorBoxOf(node) {
  return node.closest("form, article, section")?.querySelector(".form-error");
}

const runForm = document.getElementById("run-form");
runForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = errorBoxOf(runForm);
  clearError(box);
  let input;
  try {
    const text = runForm.elements.input.value.trim();
    input = text ? JSON.parse(text) : null;
  } catch (error) {
    showError(box, `The input is not JSON: ${error.message}`);
    return;
  }
  const button = runForm.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const run = await call("POST", `/workflows/${enc(runForm.dataset.workflow)}/runs`, {
      input,
      version: Number(runForm.elements.version.value),
      reason: runForm.elements.reason.value,
    });
    window.location.assign(`/runs/${enc(run.id)}`);
  } catch (error) {
    showError(box, error);
    button.disabled = false;
  }
});

document.addEventListener("click", async (event) => {
  const toggle = event.target.closest("[data-toggle-trigger]");
  const remove = event.target.closest("[data-delete-trigger]");
  const button = toggle || remove;
  if (!button) return;
  const box = errorBoxOf(button);
  clearError(box);
  const path = `/workflows/${enc(button.dataset.workflow)}/triggers/${enc(button.dataset.toggleTrigger || button.dataset.deleteTrigger)}`;
  try {
    if (toggle) {
      const enabled = toggle.dataset.enabled !== "true";
      await call("PATCH", path, { enabled });
      reloadSoon(enabled ? "Trigger enabled." : "Trigger disabled.");
    } else if (window.confirm(`Delete the trigger "${remove.dataset.name}"? Its URL stops working.`)) {
      await call("DELETE", path);
      reloadSoon("Trigger deleted.");
    }
  } catch (error) { showError(box, error); }
});

for (const form of document.querySelectorAll(".secret-form")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = errorBoxOf(form);
    clearError(box);
    const input = form.querySelector("input[type=password]");
    const fields = { [form.dataset.field]: input.value };
    try {
      if (form.dataset.credentialId) {
        await call("POST", `/credentials/${enc(form.dataset.credentialId)}/rotate`, { fields });
      } else {
        await call("POST", `/credentials?workspace_id=${enc(form.dataset.workspace)}`, {
          name: form.dataset.credentialName, fields,
        });
      }
      input.value = "";
      reloadSoon("Secret saved in the vault. Senders signing with the old one are accepted during the grace period.");
    } catch (error) {
      input.value = "";
      showError(box, error);
    }
  });
}

const triggerForm = document.getElementById("trigger-form");
triggerForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = errorBoxOf(triggerForm);
  clearError(box);
  let settings;
  try { settings = JSON.parse(triggerForm.elements.settings.value); } catch (error) {
    showError(box, `The settings are not JSON: ${error.message}`);
    return;
  }
  try {
    await call("POST", `/workflows/${enc(triggerForm.dataset.workflow)}/triggers`, {
      kind: triggerForm.elements.kind.value,
      name: triggerForm.elements.name.value,
      enabled: triggerForm.elements.enabled.checked,
      settings,
    });
    reloadSoon("Trigger added.");
  } catch (error) { showError(box, error); }
});

const retryForm = document.getElementById("retry-form");
retryForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = errorBoxOf(retryForm);
  clearError(box);
  const f = retryForm.elements;
  try {
    await call("PUT", `/workflows/${enc(retryForm.dataset.workflow)}/retry-policy`, {
      max_attempts: Number(f.max_attempts.value),
      initial_delay_seconds: Number(f.initial_delay_seconds.value),
      multiplier: Number(f.multiplier.value),
      max_delay_seconds: Number(f.max_delay_seconds.value),
      jitter: f.jitter.checked,
      retry_on: [...retryForm.querySelectorAll("input[name=retry_on]:checked")].map((i) => i.value),
    });
    reloadSoon("Retry policy saved.");
  } catch (error) { showError(box, error); }
});

document.getElementById("retry-delete")?.addEventListener("click", async () => {
  const box = errorBoxOf(retryForm);
  if (!window.confirm("Remove the retry policy? Failed runs will not be retried.")) return;
  try {
    await call("DELETE", `/workflows/${enc(retryForm.dataset.workflow)}/retry-policy`);
    reloadSoon("Retry policy removed.");
  } catch (error) { showError(box, error); }
});
