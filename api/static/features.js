// Features the server may or may not have: each is detected from what the server reports (its
// OpenAPI document before an upload, the job JSON after), and shown only when it is there.

const TERMINAL = new Set(["completed", "completed_with_errors", "cancelled", "failed"]);

export const isTerminal = (job) => TERMINAL.has(job.status);

/** The query parameters POST /v1/jobs takes (`dry_run`: a preview; `mode`, `keep_columns`: how to read a file). */
export async function submitParameters() {
  try {
    const response = await fetch("/openapi.json", { credentials: "omit" });
    if (!response.ok) return new Set();
    const doc = await response.json();
    const parameters = doc?.paths?.["/v1/jobs"]?.post?.parameters ?? [];
    return new Set(parameters.filter((p) => p.in === "query").map((p) => p.name));
  } catch {
    return new Set();
  }
}

/** The upload's query string: a dry run when the server previews; the mode and kept columns when chosen. */
export function submitQuery(tenant, previews, { mode = "", keepColumns = "" } = {}) {
  const query = new URLSearchParams({ tenant });
  if (previews) query.set("dry_run", "true");
  if (mode) query.set("mode", mode);
  if (keepColumns.trim()) query.set("keep_columns", keepColumns.trim());
  return query.toString();
}

/** A dry run whose plan is complete: its progress bar would only say 100 %, so the plan is shown instead. */
export const isPlanned = (job) => Boolean(job.dry_run) && job.status === "planned";

/** Whether the job is a dry run not yet run: its plan is shown, with a Run button once planned. */
export const isPreview = (job) => job.status === "planning" || job.status === "planned";

export const canRun = (job) => job.status === "planned";

/** Whether any license in the plan is short of seats (then waiting for seats is offered). */
export const seatsShort = (plan) => (plan?.seats ?? []).some((seat) => Number(seat.shortfall) > 0);

/** The run call's query: `on_seat_shortage=wait` when chosen. */
export const runQuery = (waitForSeats) => (waitForSeats ? "?on_seat_shortage=wait" : "");

export const canResume = (job) => job.status === "paused";

/**
 * Rollback is offered for a finished real job whose JSON names its kind (servers that support
 * rollback do), unless it was rolled back already or changed nobody.
 */
export const canRollback = (job) => isTerminal(job) && job.kind !== undefined && job.kind !== null
  && !job.dry_run && !job.rolled_back_by && (job.succeeded ?? 1) > 0;
