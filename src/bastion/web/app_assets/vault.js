// The vault: test, rotate, reveal (password again, shown briefly), delete, create, alerts.
import { call, clearError, el, notify, reloadSoon, showError } from "/app/console.js";

const enc = encodeURIComponent;
const REVEAL_SECONDS = 30;
const pageError = document.getElementById("vault-error");

function rowOf(id) {
  return document.querySelector(`tr[data-credential="${CSS.escape(id)}"]`);
}

function fieldRow(name = "", editableName = true) {
  const row = el("div", { class: "field-row" });
  const nameInput = el("input", { "aria-label": "Field name", placeholder: "field name", value: name, required: "", maxlength: 64 });
  if (!editableName) nameInput.readOnly = true;
  const valueInput = el("input", { type: "password", "aria-label": `Value of ${name || "the field"}`, placeholder: "value", required: "", autocomplete: "new-password" });
  row.append(nameInput, valueInput);
  return row;
}

function readFields(form) {
  const fields = {};
  for (const row of form.querySelectorAll(".field-row")) {
    const [name, value] = row.querySelectorAll("input");
    if (name.value) fields[name.value.trim()] = value.value;
  }
  return fields;
}

function wipe(form) {
  for (const input of form.querySelectorAll("input[type=password]")) input.value = "";
}

// -- rotate ---------------------------------------------------------------------------------
const rotateDialog = document.getElementById("rotate-dialog");
const rotateForm = document.getElementById("rotate-form");
let rotating = null;

function openRotate(id) {
  const row = rowOf(id);
  rotating = id;
  rotateForm.querySelector(".target").textContent = row.dataset.name;
  const rows = rotateForm.querySelector(".field-rows");
  rows.replaceChildren(...row.dataset.fields.split(",").filter(Boolean).map((n) => fieldRow(n, false)));
  clearError(rotateForm.querySelector(".form-error"));
  rotateDialog.showModal();
}

rotateForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = rotateForm.querySelector(".form-error");
  try {
    const done = await call("POST", `/credentials/${enc(rotating)}/rotate`, { fields: readFields(rotateForm) });
    wipe(rotateForm);
    rotateDialog.close();
    reloadSoon(`Rotated ${done.name}: now version ${done.version}.`);
  } catch (error) { showError(box, error); }
});
rotateDialog?.addEventListener("close", () => wipe(rotateForm));

// -- reveal ---------------------------------------------------------------------------------
const revealDialog = document.getElementById("reveal-dialog");
const revealForm = document.getElementById("reveal-form");
let revealing = null;
let hideTimer = null;

function hideRevealed() {
  const box = revealForm.querySelector(".revealed");
  box.querySelector("dl").replaceChildren();
  box.hidden = true;
  clearTimeout(hideTimer);
}

function openReveal(id) {
  revealing = id;
  hideRevealed();
  revealForm.reset();
  revealForm.querySelector(".target").textContent = rowOf(id).dataset.name;
  clearError(revealForm.querySelector(".form-error"));
  revealDialog.showModal();
}

revealForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = revealForm.querySelector(".form-error");
  clearError(box);
  const password = revealForm.elements.password;
  try {
    const values = await call("POST", `/credentials/${enc(revealing)}/reveal`, {
      reason: revealForm.elements.reason.value, password: password.value,
    });
    password.value = "";
    const list = revealForm.querySelector(".revealed dl");
    list.replaceChildren(...Object.entries(values).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, el("code", { class: "copyable" }, v))]));
    revealForm.querySelector(".revealed").hidden = false;
    hideTimer = setTimeout(hideRevealed, REVEAL_SECONDS * 1000);
  } catch (error) {
    password.value = "";
    showError(box, error);
  }
});
revealDialog?.addEventListener("close", () => { hideRevealed(); revealForm.reset(); });

// -- create ---------------------------------------------------------------------------------
const createDialog = document.getElementById("create-dialog");
const createForm = document.getElementById("create-form");

function resetCreate() {
  createForm.reset();
  createForm.querySelector(".field-rows").replaceChildren(fieldRow("value"));
  createForm.querySelector(".oauth-only").hidden = true;
}

document.getElementById("open-create")?.addEventListener("click", () => {
  resetCreate();
  clearError(createForm.querySelector(".form-error"));
  createDialog.showModal();
});
document.getElementById("add-field")?.addEventListener("click", () => {
  createForm.querySelector(".field-rows").append(fieldRow());
});
createForm?.elements.kind.addEventListener("change", () => {
  const oauth = createForm.elements.kind.value === "oauth2";
  createForm.querySelector(".oauth-only").hidden = !oauth;
  createForm.querySelector(".field-rows").replaceChildren(
    ...(oauth ? [fieldRow("client_secret"), fieldRow("refresh_token")] : [fieldRow("value")]));
});
createForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const f = createForm.elements;
  const body = { name: f.name.value, kind: f.kind.value, description: f.description.value, fields: readFields(createForm) };
  if (f.kind.value === "oauth2") {
    body.settings = Object.fromEntries(
      [["token_url", f.token_url.value], ["client_id", f.client_id.value], ["scope", f.scope.value]].filter(([, v]) => v));
  }
  if (f.rotation_period_days.value) body.rotation_period_days = Number(f.rotation_period_days.value);
  try {
    await call("POST", `/credentials?workspace_id=${enc(f.workspace.value)}`, body);
    wipe(createForm);
    createDialog.close();
    reloadSoon(`Created ${body.name}.`);
  } catch (error) { showError(createForm.querySelector(".form-error"), error); }
});
createDialog?.addEventListener("close", () => wipe(createForm));

// -- row buttons ----------------------------------------------------------------------------
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-test], [data-rotate], [data-reveal], [data-delete], [data-ack]");
  if (!button) return;
  clearError(pageError);
  const d = button.dataset;
  try {
    if (d.rotate) openRotate(d.rotate);
    else if (d.reveal) openReveal(d.reveal);
    else if (d.test) {
      button.disabled = true;
      const result = await call("POST", `/credentials/${enc(d.test)}/test`);
      reloadSoon(`${result.name}: ${result.health}${result.health_reason ? ` (${result.health_reason})` : ""}.`);
    } else if (d.delete) {
      const name = rowOf(d.delete).dataset.name;
      if (!window.confirm(`Delete the credential "${name}" and every version of it?`)) return;
      await call("DELETE", `/credentials/${enc(d.delete)}`);
      reloadSoon(`Deleted ${name}.`);
    } else if (d.ack) {
      await call("POST", `/credential-alerts/${enc(d.ack)}/acknowledge`);
      reloadSoon("Alert acknowledged.");
    }
  } catch (error) {
    button.disabled = false;
    showError(pageError, error);
    notify(error.message, "error");
  }
});
