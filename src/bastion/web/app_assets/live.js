// Server-sent events over fetch: the session cookie rides along, Last-Event-ID resumes
// where the stream stopped, and a lost connection retries with exponential back-off and
// jitter (1 s doubling to 30 s) while the offline banner is shown.
import { connection } from "/app/console.js";

const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 30000;
let leaving = false;
window.addEventListener("pagehide", () => { leaving = true; });
window.addEventListener("beforeunload", () => { leaving = true; });

function parse(block) {
  const event = { event: "message", data: "", id: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") event.id = value;
  }
  if (!data.length && event.event === "message") return null;
  event.data = data.join("\n");
  return event;
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

// onEvent(name, parsedData) may return false to close the stream for good.
export function openStream(url, { onEvent, lastEventId = "", onOpen } = {}) {
  let stopped = false;
  let controller = null;
  let lastId = lastEventId;
  let delay = FIRST_DELAY_MS;

  async function readAll(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = parse(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (!event) continue;
        if (event.id) lastId = event.id;
        let data = event.data;
        try { data = JSON.parse(event.data); } catch { /* plain text */ }
        if (onEvent && onEvent(event.event, data) === false) {
          stopped = true;
          controller.abort();
          return;
        }
      }
    }
  }

  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const headers = { Accept: "text/event-stream" };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const response = await fetch(url, {
          headers, signal: controller.signal, credentials: "same-origin", cache: "no-store",
        });
        if (response.status === 401) {
          window.location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
          return;
        }
        if (response.status >= 400 && response.status < 500) return; // will not get better
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        connection.up();
        delay = FIRST_DELAY_MS;
        if (onOpen) onOpen();
        await readAll(response);
      } catch (error) {
        if (stopped || leaving || error.name === "AbortError") return;
        connection.down();
      }
      if (stopped || leaving) return;
      await sleep(delay * (0.5 + Math.random() / 2));
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  }

  run();
  const close = () => { stopped = true; if (controller) controller.abort(); };
  window.addEventListener("pagehide", close);
  return { close };
}
