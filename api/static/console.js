// The console: sign in with an API key, pick a tenant, upload a CSV, watch jobs.

import { call, callJson, detailOf, hooks, jsonOf, session } from "./api.js";
import * as vocabulary from "./vocabulary.js";
import { JobView } from "./job.js";
import { age, byId, count, fillRows, setText, statusText } from "./render.js";
import { scanRequest } from "./scan.js";

const JOBS_SHOWN = 20;
const state = { file: null, key: null };
const jobView = new JobView({ onChange: () => loadJobs(), onOpen: (id) => openJob(id), signedIn: () => state.key });

// --- signing in -------------------------------------------------------------------------------
async function signIn(event) {
  event.preventDefault();
  const input = byId("api-key");
  const key = input.value.trim();
  input.value = "";
  if (!key) return signInError("Enter your API key.");
  session.signIn(key);
  return enter();
}

/** Opens the workspace when the stored key is accepted (it lists the key's tenant profiles). */
async function enter() {
  const result = await callJson("/v1/tenants");
  if (!result.ok) {
    session.signOut();
    return signInError(result.status === 401 ? "That API key was not accepted." : detailOf(result));
  }
  const tenants = (result.data.value ?? []).map((t) => t.name);
  state.key = result.data.key ?? null;
  fillTenants(tenants);
  byId("sign-in-error").hidden = true;
  byId("sign-in").hidden = true;
  byId("workspace").hidden = false;
  byId("who").hidden = false;
  const as = state.key ? ` as ${state.key.name}${state.key.may_write ? "" : " (read-only)"}` : "";
  setText(byId("who-text"), `Signed in${as} · ${tenants.length} tenant profile${tenants.length === 1 ? "" : "s"}`);
  byId("tenant").focus();
  return loadJobs();
}

function signInError(text) {
  const box = byId("sign-in-error");
  setText(box, text);
  box.hidden = false;
  byId("api-key").focus();
}

function signOut() {
  session.signOut();
  state.key = null;
  jobView.close();
  for (const id of ["workspace", "who", "job", "upload-errors"]) byId(id).hidden = true;
  setText(byId("upload-status"), "");
  byId("sign-in").hidden = false;
  byId("api-key").focus();
}

/** The API no longer accepts the key (revoked, rotated): back to the sign-in form, saying why. */
function keyRefused() {
  if (byId("workspace").hidden) return;
  signOut();
  signInError("The API no longer accepts this key: sign in again.");
}

function fillTenants(names) {
  const previous = sessionStorage.getItem("bulklicense.tenant");
  for (const id of ["tenant", "scan-tenant"]) {
    const select = byId(id);
    select.replaceChildren(...names.map((name) => new Option(name, name)));
    if (names.includes(previous)) select.value = previous;
  }
}

// --- uploading --------------------------------------------------------------------------------
function choose(file) {
  state.file = file ?? null;
  setText(byId("file-chosen"), file ? `Chosen: ${file.name} (${count(file.size)} bytes)` : "");
}

function onDrop(event) {
  event.preventDefault();
  byId("drop-zone").classList.remove("over");
  const files = event.dataTransfer?.files;
  if (!files || !files.length) return;
  choose(files[0]);
  try {
    byId("csv-file").files = files; // keeps the file picker showing what was dropped
  } catch {
    // some browsers do not let a drop set the picker; the dropped file is used all the same
  }
}

async function upload(event) {
  event.preventDefault();
  const tenant = byId("tenant").value;
  if (!tenant) return setText(byId("upload-status"), "Pick a tenant first.");
  if (!state.file) return setText(byId("upload-status"), "Choose or drop a CSV file first.");
  sessionStorage.setItem("bulklicense.tenant", tenant);
  const button = byId("upload");
  button.disabled = true;
  setText(byId("upload-status"), "Uploading…");
  try {
    const choices = { mode: byId("mode").value, keepColumns: byId("keep-columns").value,
      assignment: byId("assignment").value };
    const response = await call(`/v1/jobs?${vocabulary.submitQuery(tenant, choices)}`, {
      method: "POST", body: state.file, headers: { "Content-Type": "text/csv" },
    });
    const body = await jsonOf(response);
    if (response.status === 202 && body) return accepted(body);
    return refused({ status: response.status, data: body });
  } catch (error) {
    return refused({ status: 0, data: { detail: `the upload did not reach the API (${error.message})` } });
  } finally {
    button.disabled = false;
  }
}

function accepted(body) {
  byId("upload-errors").hidden = true;
  const warnings = (body.warnings ?? []).join(" ");
  setText(byId("upload-status"), `Accepted: ${count(body.total)} users.${warnings ? ` Warning: ${warnings}` : ""}`);
  openJob(body.id);
  loadJobs();
}

/** Shows why the file was refused: the detail, and each problem with its row, column and value. */
function refused(result) {
  setText(byId("upload-status"), "");
  const errors = Array.isArray(result.data?.errors) ? result.data.errors : [];
  const total = result.data?.total_errors ?? errors.length;
  setText(byId("upload-errors-detail"), detailOf(result));
  fillRows(byId("error-table").tBodies[0],
    errors.map((e) => [e.row ?? "–", e.column ?? "–", e.value ?? "", e.message ?? ""]));
  byId("error-table").hidden = errors.length === 0;
  setText(byId("upload-errors-more"), total > errors.length ? `Showing ${count(errors.length)} of ${count(total)} problems.` : "");
  byId("upload-errors").hidden = false;
}

// --- jobs from a scan of the tenant -------------------------------------------------------------
async function scan(event) {
  event.preventDefault();
  const tenant = byId("scan-tenant").value;
  if (!tenant) return setText(byId("scan-status"), "Pick a tenant first.");
  sessionStorage.setItem("bulklicense.tenant", tenant);
  const { path, body } = scanRequest({
    tenant, kind: byId("scan-kind").value, inactiveDays: byId("inactive-days").value,
    excludeGroup: byId("exclude-group").value, excludeUpns: byId("exclude-upns").value, skus: byId("scan-skus").value,
  });
  const button = byId("scan-submit");
  button.disabled = true;
  setText(byId("scan-status"), "Asking…");
  try {
    const options = body ? { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } }
      : { method: "POST" };
    const response = await call(path, options);
    const answer = await jsonOf(response);
    if (response.status === 202 && answer) {
      setText(byId("scan-status"), "Accepted: a worker is reading the tenant.");
      byId("upload-errors").hidden = true;
      openJob(answer.id);
      return loadJobs();
    }
    setText(byId("scan-status"), "");
    return refused({ status: response.status, data: answer });
  } catch (error) {
    setText(byId("scan-status"), "");
    return refused({ status: 0, data: { detail: `the request did not reach the API (${error.message})` } });
  } finally {
    button.disabled = false;
  }
}

function scanKindChanged() {
  byId("reclaim-choices").hidden = byId("scan-kind").value !== "reclaim";
}

// --- jobs -------------------------------------------------------------------------------------
function openJob(id) {
  jobView.open(id);
  byId("job").scrollIntoView({ block: "nearest" });
}

async function loadJobs() {
  const result = await callJson(`/v1/jobs?limit=${JOBS_SHOWN}`);
  if (!result.ok) return;
  const jobs = result.data.value ?? [];
  const now = Date.now();
  fillRows(byId("job-list").tBodies[0], jobs.map((job) => [
    jobButton(job.id), job.tenant, statusText(job.status) + (job.awaiting_approval ? ", awaiting approval" : ""),
    count(job.total), age(job.created_at, now),
  ]));
  byId("jobs-empty").hidden = jobs.length > 0;
}

function jobButton(id) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link";
  button.textContent = id.slice(0, 12);
  button.title = id;
  button.setAttribute("aria-label", `Open job ${id}`);
  button.addEventListener("click", () => openJob(id));
  return button;
}

// --- wiring -----------------------------------------------------------------------------------
function wire() {
  hooks.keyRefused = keyRefused;
  byId("sign-in-form").addEventListener("submit", signIn);
  byId("sign-out").addEventListener("click", signOut);
  byId("upload-form").addEventListener("submit", upload);
  byId("scan-form").addEventListener("submit", scan);
  byId("scan-kind").addEventListener("change", scanKindChanged);
  byId("csv-file").addEventListener("change", (e) => choose(e.target.files[0]));
  byId("refresh-jobs").addEventListener("click", () => loadJobs());
  const zone = byId("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", onDrop);
  // A file dropped beside the zone must not make the browser leave the console to open it.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  if (session.key()) enter();
  else byId("api-key").focus();
}

wire();
