// One job's view: live progress from the event stream, failures by reason, actions and downloads.

import { callJson, detailOf, download } from "./api.js";
import * as vocabulary from "./vocabulary.js";
import { byId, count, duration, fillRows, setText, statusText } from "./render.js";
import { scanLine } from "./scan.js";
import { follow } from "./sse.js";

// While a job runs its failed rows are re-read at most every 2 s, less often for big jobs (the read
// goes through every row of the job).
const failuresEveryMs = (total) => Math.max(2000, (total ?? 0) / 2);
const FAILED_ROWS_SHOWN = 100;
const PLAN_PAGE = 50; // planned users per page of the preview

const jobPath = (id, tail = "") => `/v1/jobs/${encodeURIComponent(id)}${tail}`;

export class JobView {
  /**
   * `onChange()` after a job ends or is acted on; `onOpen(id)` when an action answers with another job;
   * `signedIn()` the key's name and scope (`{name, may_write}`), to offer approving only others' jobs.
   */
  constructor({ onChange, onOpen, signedIn }) {
    this.onChange = onChange;
    this.onOpen = onOpen;
    this.signedIn = signedIn;
    this.id = null;
    this.job = null;
    this.stream = null;
    this.failures = { shownFor: -1, loadedAt: 0, timer: null };
    this.planUsers = { offset: 0, next: null, loadedFor: null };
    byId("cancel").addEventListener("click", () => this.act("/cancel", "Cancelling…"));
    byId("resume").addEventListener("click", () => this.act("/resume", "Resuming…"));
    byId("rollback").addEventListener("click", () => this.act("/rollback", "Rolling back…"));
    byId("approve").addEventListener("click", () => this.act("/approve", "Approving…"));
    byId("reject").addEventListener("click", () =>
      this.act("/reject", "Rejecting…", { reason: byId("reject-reason").value.trim() || null }));
    byId("run").addEventListener("click", () =>
      this.act(`/run${vocabulary.runQuery(byId("wait-for-seats").checked)}`, "Starting…"));
    byId("plan-prev").addEventListener("click", () => this.loadPlanUsers(Math.max(0, this.planUsers.offset - PLAN_PAGE)));
    byId("plan-next").addEventListener("click", () => this.loadPlanUsers(this.planUsers.next ?? 0));
    byId("download-results").addEventListener("click", () => this.download("", "results"));
    byId("download-failed").addEventListener("click", () => this.download("&status=failed", "failed"));
  }

  /** Shows a job and follows its progress until it ends. */
  open(id) {
    this.close();
    this.id = id;
    this.job = null;
    this.failures = { shownFor: -1, loadedAt: 0, timer: null };
    this.planUsers = { offset: 0, next: null, loadedFor: null };
    fillRows(byId("plan-users").tBodies[0], []);
    byId("plan-pager").hidden = true;
    byId("reading").hidden = true;
    setText(byId("job-id"), id);
    setText(byId("job-message"), "");
    setText(byId("job-status"), "loading…");
    byId("failures").hidden = true;
    byId("preview").hidden = true;
    byId("approval").hidden = true;
    byId("reject-reason").value = "";
    byId("job").hidden = false;
    this.watch(id);
  }

  /** (Re)starts following the job's event stream from its current state. */
  watch(id) {
    if (this.stream) this.stream.close();
    this.stream = follow(jobPath(id, "/events"), {
      onEvent: (event) => this.onEvent(id, event),
      onState: (state) => setText(byId("job-stream"), state === "live" ? "" : "connection lost, reconnecting…"),
      onStop: (status) => {
        if (status) setText(byId("job-message"), `Live progress stopped: the API answered ${status}.`);
      },
    });
  }

  close() {
    if (this.stream) this.stream.close();
    clearTimeout(this.failures.timer);
    this.stream = null;
    this.id = null;
  }

  onEvent(id, event) {
    if (id !== this.id || (event.type !== "progress" && event.type !== "end")) return;
    this.show(JSON.parse(event.data));
    if (event.type === "end") {
      this.loadFailures();
      this.onChange();
    }
  }

  /** Renders the job JSON (as GET /v1/jobs/{id} and the event stream give it). */
  show(job) {
    this.job = job;
    const badge = byId("job-status");
    setText(badge, statusText(job.status));
    badge.className = `badge ${job.status}`;
    const paused = byId("job-paused");
    paused.hidden = !job.paused_reason;
    setText(paused, job.paused_reason ? `paused: ${statusText(job.paused_reason)}` : "");
    this.showReading(job.input);
    const scanText = scanLine(job);
    byId("job-scan").hidden = !scanText;
    setText(byId("job-scan"), scanText);
    this.showSchedule(job);
    this.showProgress(job);
    this.showActions(job);
    this.showApproval(job);
    const preview = vocabulary.isPreview(job) && job.plan;
    byId("preview").hidden = !preview;
    if (preview) this.showPlan(job);
    if ((job.failed ?? 0) !== this.failures.shownFor) this.scheduleFailures();
  }

  /** How the upload was read (the job's `input`): each column's reading, and the lines skipped. */
  showReading(reading) {
    const box = byId("reading");
    box.hidden = !reading || !Array.isArray(reading.columns) || reading.columns.length === 0;
    if (box.hidden) return;
    const what = [reading.encoding, reading.layout && statusText(reading.layout), `mode ${reading.mode}`];
    setText(byId("reading-summary"), `How the file was read (${what.filter(Boolean).join(", ")})`);
    fillRows(byId("reading-columns").tBodies[0], reading.columns.map((c) => [c.column, c.read_as]));
    const notes = (reading.notes ?? []).map((note) => {
      const item = document.createElement("li");
      setText(item, note);
      return item;
    });
    byId("reading-notes").replaceChildren(...notes);
  }

  /** A job with dated rows: its rows by the day they are due, and the seat table by date. */
  showSchedule(job) {
    const box = byId("schedule");
    box.hidden = !Array.isArray(job.schedule) || job.schedule.length === 0;
    if (box.hidden) return;
    // A plan holds nothing yet (its `scheduled` is 0): it says how many rows its run will hold.
    const ahead = job.schedule.reduce((n, d) => n + (d.at ? d.rows : 0), 0);
    setText(byId("schedule-summary"), vocabulary.plansOnly(job)
      ? `Rows by day (${count(ahead)} dated ahead: held for their day once this job runs)`
      : `Rows by day (${count(job.scheduled ?? 0)} waiting for their day)`);
    fillRows(byId("schedule-days").tBodies[0], job.schedule.map((d) => [d.at ?? "at submission", count(d.rows)]));
    const seats = job.seats_by_day ?? [];
    fillRows(byId("schedule-seats").tBodies[0], seats.map((s) => [s.at ?? "at submission", s.sku || s.sku_id,
      count(s.adds), count(s.releases), count(s.free), count(s.shortfall)]),
    (_, i) => (Number(seats[i].shortfall) > 0 ? "short" : ""));
  }

  showProgress(job) {
    // A finished dry run's bar would only say 100 %: the preview shows its plan instead.
    const planned = vocabulary.isPlanned(job);
    byId("progress-row").hidden = planned;
    byId("job-counts").hidden = planned;
    const total = job.total ?? 0;
    const done = Math.max(0, total - (job.pending ?? 0));
    const bar = byId("job-progress");
    bar.max = Math.max(total, 1);
    bar.value = done;
    bar.setAttribute("aria-valuetext", `${count(done)} of ${count(total)} users done`);
    setText(byId("job-percent"), total ? `${Math.floor((100 * done) / total)}%` : "–");
    for (const name of vocabulary.COUNTERS) setText(byId(`count-${name}`), count(job[name] ?? 0));
    setText(byId("job-rate"), job.rate_per_s ? `${job.rate_per_s.toFixed(1)} users/s` : "–");
    setText(byId("job-eta"), vocabulary.isTerminal(job) ? "done" : duration(job.eta_s));
  }

  showActions(job) {
    const planning = vocabulary.isPlanning(job); // nothing to download before the plan exists
    byId("cancel").hidden = !vocabulary.canCancel(job);
    byId("resume").hidden = !vocabulary.canResume(job);
    byId("rollback").hidden = !vocabulary.canRollback(job);
    byId("download-results").hidden = planning;
    byId("download-failed").hidden = planning;
  }

  /** A job that waits for approval: who submitted it, Approve / Reject for another key, or the decision. */
  showApproval(job) {
    const approval = job.approval;
    byId("approval").hidden = !approval;
    if (!approval) return;
    const key = this.signedIn();
    const mayDecide = vocabulary.canDecide(job, key);
    byId("approval-decide").hidden = !mayDecide;
    let title = "Needs approval once planned";
    let text = `Submitted by ${approval.submitted_by}: another API key approves or rejects it once every user is read.`;
    if (approval.decision) {
      title = `${statusText(approval.decision)} by ${approval.by}`.replace(/^./, (c) => c.toUpperCase());
      text = [approval.reason ? `Reason: ${approval.reason}` : "", job.run_as ? `Its run is job ${job.run_as}.` : ""]
        .filter(Boolean).join(" ");
    } else if (job.awaiting_approval) {
      title = "Awaiting approval: nothing has been written yet";
      if (mayDecide) text = `Submitted by ${approval.submitted_by}. Approve to run it (it reads every user again), or reject it.`;
      else if (key && key.name === approval.submitted_by) {
        text = "You submitted this job with this key: another API key must approve or reject it. You may cancel it.";
      } else text = `Submitted by ${approval.submitted_by}. Only another key that may change jobs can approve it.`;
    }
    setText(byId("approval-title"), title);
    setText(byId("approval-text"), text);
  }

  showPlan(job) {
    const plan = job.plan;
    setText(byId("preview-title"), job.dry_run ? "Preview (dry run): nothing has been written yet"
      : "Plan: nothing has been written yet");
    setText(byId("plan-changes"), count(plan.changes ?? 0));
    setText(byId("plan-unchanged"), count(plan.unchanged ?? job.unchanged ?? 0));
    setText(byId("plan-conflicts"), count(plan.warnings?.may_conflict ?? 0));
    setText(byId("plan-via-group"), count(plan.notes?.held_via_group ?? 0));
    const predicted = Object.entries(plan.predicted_failures ?? {}).sort((a, b) => b[1] - a[1]);
    fillRows(byId("plan-failures").tBodies[0], predicted.map(([reason, n]) => [statusText(reason), count(n)]));
    // An empty table reads as "not known yet": a finished plan says there are none.
    byId("plan-failures").parentElement.hidden = predicted.length === 0;
    setText(byId("plan-failures-title"), predicted.length || !vocabulary.isPlanned(job)
      ? "Predicted failures" : "Predicted failures: none");
    const seats = (plan.seats ?? []).map((s) => [s.sku || s.sku_id, count(s.needed), count(s.released),
      count(s.free), count(s.shortfall)]);
    fillRows(byId("plan-seats").tBodies[0], seats, (_, i) => (Number(plan.seats[i].shortfall) > 0 ? "short" : ""));
    byId("seat-choice").hidden = !vocabulary.seatsShort(plan);
    byId("run").hidden = !vocabulary.canRun(job);
    byId("plan-reading").hidden = !vocabulary.isPlanning(job);
    if (vocabulary.isPlanned(job) && this.planUsers.loadedFor !== job.id) this.loadPlanUsers(0);
  }

  /** One page of the planned users: who, what changes, or why it would fail (from the results, paged). */
  async loadPlanUsers(offset) {
    const id = this.id;
    if (!id) return;
    this.planUsers.loadedFor = id;
    const result = await callJson(jobPath(id, `/results?format=json&limit=${PLAN_PAGE}&offset=${offset}`));
    if (id !== this.id || !result.ok) return;
    const rows = result.data.value ?? [];
    this.planUsers.offset = offset;
    this.planUsers.next = typeof result.data.next_offset === "number" ? result.data.next_offset : null;
    fillRows(byId("plan-users").tBodies[0], rows.map((r) => [r.row, userOf(r, this.job), statusText(r.status), planDetail(r)]),
      (values) => (values[2] === "would fail" ? "short" : ""));
    const total = this.job?.total ?? 0;
    byId("plan-pager").hidden = offset === 0 && this.planUsers.next === null;
    byId("plan-prev").disabled = offset === 0;
    byId("plan-next").disabled = this.planUsers.next === null;
    setText(byId("plan-page"), rows.length
      ? `Users ${count(offset + 1)}–${count(offset + rows.length)} of ${count(total)}` : "");
  }

  scheduleFailures() {
    if (this.failures.timer) return;
    const wait = Math.max(0, this.failures.loadedAt + failuresEveryMs(this.job?.total) - Date.now());
    this.failures.timer = setTimeout(() => this.loadFailures(), wait);
  }

  /** Reads the failed rows and shows them grouped by reason. */
  async loadFailures() {
    const id = this.id;
    clearTimeout(this.failures.timer);
    this.failures.timer = null;
    if (!id || !this.job) return;
    const expected = this.job.failed ?? 0;
    this.failures.loadedAt = Date.now();
    const result = await callJson(jobPath(id, "/results?status=failed&format=json"));
    if (id !== this.id || !result.ok) return;
    const rows = result.data.value ?? [];
    this.failures.shownFor = expected;
    const byReason = new Map();
    for (const row of rows) byReason.set(row.reason || "unknown", (byReason.get(row.reason || "unknown") ?? 0) + 1);
    const reasons = [...byReason].sort((a, b) => b[1] - a[1]);
    fillRows(byId("failure-reasons").tBodies[0], reasons.map(([reason, n]) => [statusText(reason), count(n)]));
    const shown = rows.slice(0, FAILED_ROWS_SHOWN);
    fillRows(byId("failed-rows").tBodies[0],
      shown.map((r) => [r.row, userOf(r, this.job), statusText(r.reason), withGroups(r.graph_message || r.detail || "", r)]));
    setText(byId("failed-rows-more"),
      rows.length > shown.length ? `Showing the first ${shown.length} of ${count(rows.length)} failed rows; download them all below.` : "");
    byId("failures").hidden = rows.length === 0;
  }

  /** POSTs an action on the job; follows the job it answers with when that is another one. */
  async act(tail, doing, body) {
    const id = this.id;
    if (!id) return;
    setText(byId("job-message"), doing);
    const json = body === undefined ? {} : { body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
    const result = await callJson(jobPath(id, tail), { method: "POST", ...json });
    if (id !== this.id) return;
    if (!result.ok) {
      setText(byId("job-message"), `Refused: ${detailOf(result)}`);
      return;
    }
    setText(byId("job-message"), "");
    const answered = result.data && typeof result.data.id === "string" ? result.data.id : id;
    if (answered !== id) {
      this.onOpen(answered);
      return;
    }
    const fresh = await callJson(jobPath(id));
    if (id !== this.id) return;
    if (fresh.ok) this.show(fresh.data);
    this.watch(id); // a resumed job's state may rank below what the stream last sent: start afresh
    this.onChange();
  }

  async download(query, label) {
    const id = this.id;
    setText(byId("job-message"), "Preparing the download…");
    const result = await download(jobPath(id, `/results?format=csv${query}`), `${id}-${label}.csv`);
    setText(byId("job-message"), result.ok ? "" : `Download refused: ${detailOf(result)}`);
  }
}

/**
 * Who a row is about: a scan names users by object id and keeps their UPN beside it (an upload's own
 * columns are the file's text, so its rows keep the user they act on).
 */
function userOf(row, job) {
  return (job?.scan && row.extra?.userPrincipalName) || row.user;
}

/** A planned user's line: what changes, or the predicted failure and its reason. */
function planDetail(row) {
  const day = row.scheduled_for ? `on ${row.scheduled_for}: ` : "";
  return day + planText(row);
}

function planText(row) {
  if (row.status === vocabulary.RESULT.WOULD_FAIL) {
    const why = row.graph_message || row.detail || "";
    return withGroups(`${statusText(row.reason)}${why ? `: ${why}` : ""}`, row);
  }
  if (row.status === vocabulary.RESULT.WOULD_CHANGE) {
    const why = row.extra?.reclaim_detail; // a reclamation's reason for taking the license back
    return withGroups(`${row.action ?? ""}${why ? ` (${why})` : ""}`, row);
  }
  if (row.status === vocabulary.RESULT.UNCHANGED) {
    return withGroups(row.note === "held_via_group" ? "already held through a group" : "already as asked", row);
  }
  return statusText(row.status);
}

/** A row's text with the groups its licenses come from: "… (ENTERPRISEPACK via Sales E3)". */
function withGroups(text, row) {
  const groups = (row.groups ?? []).map((g) => `${g.sku || g.sku_id} via ${g.group_name || `group ${g.group_id}`}`);
  if (!groups.length) return text;
  return `${text}${text ? " " : ""}(${groups.join("; ")})`;
}
