// Jobs built from a scan of the tenant: the form's request, and a scan's counts in words.

/** The request the form asks for: its path and JSON body (every scan job is a dry run first). */
export function scanRequest({ tenant, kind, inactiveDays, excludeGroup, excludeUpns, skus }) {
  const query = new URLSearchParams({ tenant, dry_run: "true" });
  const list = (text) => text.split(/[,\n]/).map((piece) => piece.trim()).filter(Boolean);
  if (kind === "redundant") {
    for (const sku of list(skus)) query.append("sku", sku);
    return { path: `/v1/cleanup/redundant-direct?${query}`, body: null };
  }
  query.set("inactive_days", String(inactiveDays));
  const body = { skus: list(skus), exclude_upns: list(excludeUpns) };
  if (excludeGroup.trim()) body.exclude_group = excludeGroup.trim();
  return { path: `/v1/reclaim?${query}`, body };
}

/** One line saying what the scan of a job found (empty for a job without a scan). */
export function scanLine(job) {
  const scan = job.scan;
  if (!scan) return "";
  if (!scan.outcome) return "Reading the tenant…";
  const summary = scan.summary ?? {};
  const words = (counts) => Object.entries(counts ?? {})
    .map(([why, n]) => `${n} ${why.replaceAll("_", " ").replace(/\bupn\b/, "UPN")}`);
  const found = words(summary.found);
  const alone = words(summary.excluded);
  const parts = [`Scan ${scan.outcome}: ${summary.licensed_users ?? 0} licensed users read, ${summary.users ?? 0} to change`];
  if (found.length) parts.push(`found: ${found.join(", ")}`);
  if (alone.length) parts.push(`left alone: ${alone.join(", ")}`);
  if (summary.sign_ins_read === false) parts.push("sign-ins could not be read (see the warnings)");
  return `${parts.join("; ")}.`;
}
