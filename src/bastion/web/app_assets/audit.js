// Audit: verify the chain; search by value (HMAC'd by the server, never put in a URL).
import { call, clearError, showError } from "/app/console.js";

const verifyButton = document.getElementById("verify");
const result = document.getElementById("verify-result");

verifyButton?.addEventListener("click", async () => {
  verifyButton.disabled = true;
  result.className = "";
  result.textContent = "Verifying…";
  try {
    const verdict = await call("GET", "/audit/verify");
    if (verdict.ok) {
      result.textContent = `Chain OK: ${verdict.checked} record(s) verified, head ${verdict.head}.`;
      result.className = "status-succeeded";
    } else {
      result.textContent = verdict.first_bad_seq
        ? `Chain BROKEN at record ${verdict.first_bad_seq}: ${verdict.problem}`
        : `Chain BROKEN: ${verdict.problem}`;
      result.className = "bad";
    }
  } catch (error) {
    result.textContent = "";
    showError(result, error);
  } finally {
    verifyButton.disabled = false;
  }
});

const valueForm = document.getElementById("value-form");
valueForm?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = valueForm.parentElement.querySelector(".form-error");
  clearError(box);
  const input = document.getElementById("value-input");
  try {
    const { hash } = await call("POST", "/audit/hash", { value: input.value });
    input.value = "";
    window.location.assign(`/audit?value_hash=${encodeURIComponent(hash)}`);
  } catch (error) {
    showError(box, error);
  }
});
