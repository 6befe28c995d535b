// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so this reads the
// stream itself, parses it, and reconnects with Last-Event-ID until the server sends `end`.

import { call } from "./api.js";

/** Turns text chunks into events, as the SSE format defines them (any line ending; `:` comments). */
export class SseParser {
  constructor() {
    this.buffer = "";
    this.pendingCR = false; // a chunk ended in CR: a LF starting the next one belongs to it
    this.reset();
    this.lastEventId = "";
    this.retryMs = null;
  }

  reset() {
    this.type = "";
    this.data = [];
    this.id = null;
  }

  /** Feeds a chunk; returns the events it completed: `{type, data, id}`. */
  push(chunk) {
    const text = this.pendingCR && chunk.startsWith("\n") ? chunk.slice(1) : chunk;
    this.pendingCR = text.endsWith("\r");
    const lines = (this.buffer + text).split(/\r\n|\r|\n/);
    this.buffer = lines.pop(); // the unfinished line, if any
    const events = [];
    for (const line of lines) this.line(line, events);
    return events;
  }

  line(line, events) {
    if (line === "") {
      if (this.id !== null) this.lastEventId = this.id;
      if (this.data.length) {
        events.push({ type: this.type || "message", data: this.data.join("\n"), id: this.lastEventId });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Number(value);
  }
}

const MAX_BACKOFF_MS = 30_000;

/**
 * Follows an event stream until an `end` event, reconnecting (with Last-Event-ID) after a drop.
 * `onEvent(event)` gets every event; `onState(text)` a short connection state; `onStop(status)` is
 * called once when following stops for good (an HTTP refusal's status, or 0 after `end`/close()).
 */
export function follow(path, { onEvent, onState = () => {}, onStop = () => {} }) {
  const abort = new AbortController();
  let stopped = false;
  const stop = (status) => {
    if (!stopped) {
      stopped = true;
      abort.abort();
      onStop(status);
    }
  };
  const run = async () => {
    const parser = new SseParser();
    let failures = 0;
    while (!stopped) {
      const headers = { Accept: "text/event-stream" };
      if (parser.lastEventId) headers["Last-Event-ID"] = parser.lastEventId;
      try {
        const response = await call(path, { headers, signal: abort.signal });
        if (!response.ok) {
          if (response.status < 500 && response.status !== 429) return stop(response.status);
          throw new Error(`status ${response.status}`);
        }
        onState("live");
        failures = 0;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const event of parser.push(value)) {
            onEvent(event);
            if (event.type === "end") return stop(0);
          }
        }
      } catch (error) {
        if (stopped) return undefined;
        failures += 1;
      }
      onState("reconnecting");
      const delay = Math.min(MAX_BACKOFF_MS, (parser.retryMs ?? 2000) * 2 ** Math.min(failures, 4));
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
    return undefined;
  };
  run();
  return { close: () => stop(0) };
}
