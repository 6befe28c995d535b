"""The jobs' own steps in the audit trail: a JobListener that records them as the `system` actor.

Events stay small and carry no secrets: counts, a pause reason and Graph's short message. What
happened to each user is in the job's results, not in the trail.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from jobs.audit import MAX_DETAILS_BYTES, SYSTEM_ACTOR, AuditAction, AuditLog
from jobs.counters import PlanCounters
from jobs.events import JobEvent
from jobs.models import UserResult

# A pause's message is Graph's (or the identity platform's) answer: kept short.
MAX_MESSAGE_CHARS = 300

ACTIONS = {
    JobEvent.PLAN_FINISHED: AuditAction.PLAN_FINISHED,
    JobEvent.STARTED: AuditAction.STARTED,
    JobEvent.PAUSED: AuditAction.PAUSED,
    JobEvent.RESUMED: AuditAction.RESUMED,
    JobEvent.FINISHED: AuditAction.FINISHED,
    JobEvent.AWAITING_APPROVAL: AuditAction.AWAITING_APPROVAL,
}


class AuditListener:
    """Appends each job event to its tenant's audit trail."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def job_event(self, job_id: str, tenant: str, event: JobEvent, details: Mapping[str, Any]) -> None:
        """Record the event, its details made small (`audit_details`); the API records a person's decisions."""
        action = ACTIONS.get(event)
        if action is not None:
            self.audit.append(tenant, SYSTEM_ACTOR, action, job=job_id, details=audit_details(event, details))

    def users_finished(self, job_id: str, tenant: str, results: Sequence[UserResult]) -> None:
        """Nothing: per-user outcomes are the job's results, kept with it."""


def audit_details(event: JobEvent, details: Mapping[str, Any]) -> dict[str, Any]:
    """What the trail keeps of an event's details: the plan's counts, a pause's reason, the final counts."""
    if event is JobEvent.PLAN_FINISHED:
        summary = PlanCounters.from_hash(details).to_json()
        plan = {key: summary[key] for key in ("planned", "changes", "unchanged", "predicted_failures", "warnings",
                                              "needed", "released")}
        if len(json.dumps(plan)) > MAX_DETAILS_BYTES:  # seats of very many SKUs: the counts still go in
            plan.pop("needed")
            plan.pop("released")
        return plan
    kept: dict[str, Any] = {k: v for k, v in details.items() if isinstance(v, int | float | bool | str) or v is None}
    message = kept.get("message")
    if isinstance(message, str):
        kept["message"] = message[:MAX_MESSAGE_CHARS]
    return kept
