// The console bundle (served only to signed-in users). Pages built by later issues add
// their modules here; this one wires API calls to the session's CSRF token.
const meta = document.querySelector('meta[name="csrf-token"]');

export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (meta) headers.set("X-CSRF-Token", meta.content);
  if (options.body && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
  const response = await fetch(`/api/v1${path}`, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401) window.location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
  return response;
}
