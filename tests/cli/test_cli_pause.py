"""How the CLI shows a paused job (the live bar and `bulklicense status`)."""

from __future__ import annotations

from cli.client import pause_line
from jobs.models import iso_time

NOW = 1_700_000_000.0


def test_an_automatic_resume_shows_when_graph_is_probed_next() -> None:
    job = {"id": "j1", "status": "paused", "paused_reason": "graph_unavailable",
           "paused_message": "Graph does not answer for tenant profile 'sim'", "next_probe_at": iso_time(NOW + 12.2)}
    assert pause_line(job, NOW) == ("paused: graph_unavailable — Graph does not answer for tenant profile 'sim', "
                                    "next probe in 12 s")


def test_a_manual_resume_says_what_to_do() -> None:
    job = {"id": "j1", "status": "paused", "paused_reason": "auth_failed", "paused_message": "AADSTS7000215: bad",
           "next_probe_at": None}
    assert pause_line(job, NOW) == ("paused: auth_failed — AADSTS7000215: bad — fix the cause, then: "
                                    "bulklicense resume j1")


def test_a_running_job_has_no_pause_line() -> None:
    assert pause_line({"id": "j1", "status": "running", "paused_reason": None}, NOW) is None
