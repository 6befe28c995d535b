// The server's vocabulary, handed over by the page (a JSON data block), and the rules the console
// draws from it: which statuses are final, which counts to show, which actions a job offers.

const VOCABULARY = JSON.parse(document.getElementById("vocabulary").textContent);

/** Job statuses by name (`STATUS.PLANNED` is "planned"), as the server reports them. */
export const STATUS = Object.freeze(VOCABULARY.statuses);

/** The job's counts the console shows, each in an element `count-<name>`. */
export const COUNTERS = Object.freeze([...VOCABULARY.counters]);

const TERMINAL = new Set(VOCABULARY.terminal);

export const isTerminal = (job) => TERMINAL.has(job.status);

/** A user's result statuses by name (`RESULT.WOULD_FAIL` is "would_fail"). */
export const RESULT = Object.freeze(VOCABULARY.results);

/**
 * The upload's query string: every upload is a dry run first, previewed before anything is written;
 * the mode, the columns to keep unread and how added licenses must be held, when chosen.
 */
export function submitQuery(tenant, { mode = "", keepColumns = "", assignment = "" } = {}) {
  const query = new URLSearchParams({ tenant, dry_run: "true" });
  if (mode) query.set("mode", mode);
  if (keepColumns.trim()) query.set("keep_columns", keepColumns.trim());
  if (assignment) query.set("assignment", assignment);
  return query.toString();
}

/** A dry run whose plan is complete: its progress bar would only say 100 %, so the plan is shown instead. */
export const isPlanned = (job) => Boolean(job.dry_run) && job.status === STATUS.PLANNED;

/** Whether the job is a dry run not yet run: its plan is shown, with a Run button once planned. */
export const isPreview = (job) => Boolean(job.dry_run)
  && (job.status === STATUS.PLANNING || job.status === STATUS.PLANNED);

export const canRun = (job) => job.status === STATUS.PLANNED;

/** Whether nothing can be downloaded yet: the job is still reading its users. */
export const isPlanning = (job) => job.status === STATUS.PLANNING;

/** Whether any license in the plan is short of seats (then waiting for seats is offered). */
export const seatsShort = (plan) => (plan?.seats ?? []).some((seat) => Number(seat.shortfall) > 0);

/** The run call's query: `on_seat_shortage=wait` when chosen. */
export const runQuery = (waitForSeats) => (waitForSeats ? "?on_seat_shortage=wait" : "");

export const canResume = (job) => job.status === STATUS.PAUSED;

/** Rollback is offered for a finished real job, unless it was rolled back already or changed nobody. */
export const canRollback = (job) => isTerminal(job) && !job.dry_run && !job.rolled_back_by
  && (job.succeeded ?? 1) > 0;
