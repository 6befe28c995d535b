// DOM helpers. Everything a file or the API brings is set as text (textContent), never parsed as HTML.

export const byId = (id) => document.getElementById(id);

/** Sets an element's text; null and undefined show as an empty string. */
export function setText(node, value) {
  node.textContent = value === null || value === undefined ? "" : String(value);
}

/** A new element with text content and optional class. */
export function cell(tag, value, className) {
  const node = document.createElement(tag);
  setText(node, value);
  if (className) node.className = className;
  return node;
}

/** Replaces a table body's rows; each row is a list of cell values or ready-made nodes. */
export function fillRows(tbody, rows, rowClass = () => "") {
  tbody.replaceChildren(
    ...rows.map((values, index) => {
      const tr = document.createElement("tr");
      const className = rowClass(values, index);
      if (className) tr.className = className;
      tr.append(...values.map((value) => (value instanceof Node ? wrap(value) : cell("td", value))));
      return tr;
    }),
  );
}

function wrap(node) {
  const td = document.createElement("td");
  td.append(node);
  return td;
}

/** A count with thousands separators. */
export const count = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "–");

/** Seconds as "45 s", "3 min 20 s" or "2 h 5 min". */
export function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
  if (seconds < 1) return "under 1 s";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** How long ago an ISO time was, e.g. "5 min ago". */
export function age(iso, now = Date.now()) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "–";
  const seconds = (now - then) / 1000;
  return seconds < 5 ? "just now" : `${duration(seconds)} ago`;
}

/** A status for people: "completed_with_errors" → "completed with errors". */
export const statusText = (status) => String(status ?? "unknown").replaceAll("_", " ");
