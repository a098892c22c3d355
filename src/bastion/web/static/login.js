// Captcha: replace the picture (needs the single-use login token, which is renewed), and
// fall back to the SVG rendering if the PNG cannot be shown.
const image = document.getElementById("captcha-image");
const tokenField = document.getElementById("login-token");
const nonceField = document.getElementById("captcha-nonce");
const refresh = document.getElementById("captcha-refresh");

image.addEventListener("error", () => {
  if (image.dataset.svg && !image.src.endsWith(".svg")) image.src = image.dataset.svg;
});

refresh.addEventListener("click", async () => {
  const body = new URLSearchParams({
    csrf_token: tokenField.value,
    captcha_nonce: nonceField.value,
  });
  const response = await fetch("/login/captcha", { method: "POST", body });
  if (!response.ok) {
    window.location.reload();
    return;
  }
  const fresh = await response.json();
  tokenField.value = fresh.csrf_token;
  nonceField.value = fresh.captcha_nonce;
  image.dataset.svg = `/login/captcha/${fresh.captcha_nonce}.svg`;
  image.src = `/login/captcha/${fresh.captcha_nonce}.png`;
  document.getElementById("captcha").value = "";
});
