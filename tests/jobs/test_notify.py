"""Notifications: which callback URLs are accepted, the signed POST, retries, rebinding, the job-side trigger."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Callable, Sequence

import httpx
import pytest
import redis

from jobs.events import JobEvent
from jobs.models import Operation, UserResult, UserStatus
from jobs.notify import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    CallbackPolicy,
    CallbackRefused,
    Delivery,
    Notifier,
    NotifyOnEnd,
    Outcome,
)
from jobs.store import JobStore

SECRET = b"webhook-secret-for-tests"
PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def resolver(answers: dict[str, Sequence[str]]) -> Callable[[str, int], Sequence[str]]:
    """A DNS stand-in: host -> addresses (unknown hosts do not resolve)."""
    def resolve(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise OSError(f"{host}: name does not resolve")
        return answers[host]

    return resolve


def no_dns(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"{host} should not have been resolved")


POLICY = CallbackPolicy(True, frozenset({"127.0.0.1", "hr.internal"}), resolver({
    "hooks.example.com": [PUBLIC_V4],
    "v6.example.com": [PUBLIC_V6],
    "internal.example.com": ["10.1.2.3"],
    "split.example.com": [PUBLIC_V4, "192.168.1.10"],
    "metadata.example.com": ["169.254.169.254"],
}))


# --- which URLs ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "why"), [
    ("http://hooks.example.com/x", "must be an https:// URL"),
    ("ftp://hooks.example.com/x", "must be an https:// URL"),
    ("hooks.example.com/x", "must be an https:// URL"),
    ("https:///x", "must be an https:// URL"),
    ("https://user:pw@hooks.example.com/x", "may not contain credentials"),
    ("https://hooks.example.com:99999/x", "not a valid URL"),
    ("https://hooks.example.com/a b", "spaces or control characters"),
    ("https://nowhere.example.com/x", "cannot be resolved"),
    ("https://127.0.0.2/x", "loopback address (127.0.0.2)"),
    ("https://[::1]/x", "loopback address (::1)"),
    ("https://10.0.0.1/x", "private address (10.0.0.1)"),
    ("https://172.16.5.4/x", "private address"),
    ("https://192.168.0.1/x", "private address"),
    ("https://169.254.169.254/latest/meta-data", "link-local address"),
    ("https://[fe80::1]/x", "link-local address"),
    ("https://224.0.0.1/x", "multicast address"),
    ("https://[ff02::1]/x", "multicast address"),
    ("https://240.0.0.1/x", "reserved address"),
    ("https://0.0.0.0/x", "unspecified address"),
    ("https://[::]/x", "unspecified address"),
    ("https://100.64.0.1/x", "non-public address"),
    ("https://[::ffff:127.0.0.1]/x", "loopback address (::ffff:127.0.0.1)"),
    ("https://[64:ff9b::a00:1]/x", "private address (64:ff9b::a00:1)"),
    ("https://[2002:c0a8:1::]/x", "private address (2002:c0a8:1::)"),
    ("https://internal.example.com/x", "private address (10.1.2.3)"),
    ("https://split.example.com/x", "private address (192.168.1.10)"),
    ("https://metadata.example.com/x", "link-local address (169.254.169.254)"),
    ("https://localhost/x", "cannot be resolved"),  # not in the fake DNS; the real one is covered below
    ("https://" + "a" * 2100 + ".example.com/", "longer than 2048"),
])
def test_urls_that_could_reach_internal_services_are_refused(url: str, why: str) -> None:
    with pytest.raises(CallbackRefused, match=why.replace("(", r"\(").replace(")", r"\)")):
        POLICY.target(url)
    assert POLICY.problem(url) is not None


def test_localhost_is_refused_by_what_it_resolves_to() -> None:
    policy = CallbackPolicy(True)  # the machine's own resolver
    assert "loopback address" in (policy.problem("https://localhost:8443/hook") or "")


def test_public_hosts_are_sent_to_the_address_that_was_checked() -> None:
    target = POLICY.target("https://hooks.example.com/hr/notify?token=abc")
    assert target.url == f"https://{PUBLIC_V4}/hr/notify?token=abc"
    assert (target.host_header, target.server_name) == ("hooks.example.com", "hooks.example.com")
    assert target.display == "https://hooks.example.com"  # no path or query: they may hold a token

    v6 = POLICY.target("https://v6.example.com:8443/x")
    assert v6.url == f"https://[{PUBLIC_V6}]:8443/x"
    assert (v6.host_header, v6.server_name) == ("v6.example.com:8443", "v6.example.com")

    literal = POLICY.target(f"https://{PUBLIC_V4}/x")
    assert literal.url == f"https://{PUBLIC_V4}/x" and literal.host_header is None


def test_allowed_hosts_may_be_internal_and_plain_http_without_a_lookup() -> None:
    policy = CallbackPolicy(True, frozenset({"127.0.0.1", "hr.internal"}), no_dns)
    for url in ("https://127.0.0.1:9443/hook", "http://127.0.0.1:8080/hook", "http://HR.internal/notify"):
        target = policy.target(url)
        assert target.url == url and target.host_header is None
    assert policy.problem("https://127.0.0.2/hook") is not None  # only the hosts named


def test_without_a_secret_no_callback_is_accepted() -> None:
    assert "BULKLICENSE_WEBHOOK_SECRET is unset" in (CallbackPolicy(False).problem(f"https://{PUBLIC_V4}/") or "")


# --- sending -----------------------------------------------------------------------------------------

class Receiver:
    """An httpx MockTransport answering with the statuses given, in turn; records every request."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)


class Later(list[tuple[Delivery, float]]):
    """Deliveries queued for a later attempt."""

    def __call__(self, delivery: Delivery, countdown_s: float) -> None:
        self.append((delivery, countdown_s))


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, retention_s=3600)


def finished_job(store: JobStore, job_id: str = "j1", callback_url: str | None = "https://hooks.example.com/h",
                 tenant: str = "contoso") -> str:
    """A committed job of two users, both succeeded."""
    store.stage(job_id, tenant, [Operation(row=r, user=f"u{r}@x", remove=("sku",)) for r in (2, 3)], 10)
    options = {"dry_run": "0"} | ({"callback_url": callback_url} if callback_url else {})
    store.commit(job_id, source="csv", options=options)
    store.record(job_id, [UserResult(row=r, user=f"u{r}@x", status=UserStatus.SUCCEEDED) for r in (2, 3)])
    return job_id


def notifier(store: JobStore, receiver: Receiver, later: Later, *, policy: CallbackPolicy = POLICY,
             tenant_urls: dict[str, str | None] | None = None, outcomes: list[Outcome] | None = None) -> Notifier:
    seen = outcomes if outcomes is not None else []
    return Notifier(store, secret=SECRET, policy=policy, http=httpx.Client(transport=httpx.MockTransport(receiver)),
                    send_later=later, tenant_urls=tenant_urls, max_attempts=3, backoff_base_s=10.0,
                    rng=random.Random(1), observe=seen.append)


def test_the_job_is_posted_signed_and_pinned_to_the_checked_address(store: JobStore) -> None:
    job_id = finished_job(store)
    receiver, later, outcomes = Receiver(204), Later(), []
    assert notifier(store, receiver, later, outcomes=outcomes).deliver(Delivery(job_id, "finished")) \
        is Outcome.DELIVERED
    assert outcomes == [Outcome.DELIVERED] and later == []
    (request,) = receiver.requests
    assert request.method == "POST" and str(request.url) == f"https://{PUBLIC_V4}/h"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    body = request.content
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers[SIGNATURE_HEADER], expected)
    assert request.headers[EVENT_HEADER] == "finished" and len(request.headers[DELIVERY_HEADER]) == 32
    job = json.loads(body)
    progress = store.progress(job_id)
    assert progress is not None
    expected_job = progress.to_json()
    expected_job["plan"] = {**{k: v for k, v in expected_job["plan"].items() if k not in ("needed", "released")},
                            "seats": []}
    assert job == expected_job
    assert (job["id"], job["status"], job["succeeded"]) == (job_id, "completed", 2)


def test_a_5xx_is_retried_later_with_the_same_body_and_backoff(store: JobStore) -> None:
    job_id = finished_job(store)
    receiver, later = Receiver(500, httpx.ConnectError("refused"), 200), Later()
    notify = notifier(store, receiver, later)
    assert notify.deliver(Delivery(job_id, "finished")) is Outcome.RETRYING
    (second, wait_s), = later
    assert second.attempt == 2 and 8.0 <= wait_s <= 12.0  # 10 s ± 20 %
    assert second.body == receiver.requests[0].content.decode()
    assert second.delivery_id == receiver.requests[0].headers[DELIVERY_HEADER]

    assert notify.deliver(second) is Outcome.RETRYING  # a connection error: retried too
    third, wait_s = later[1]
    assert third.attempt == 3 and 24.0 <= wait_s <= 36.0
    assert notify.deliver(third) is Outcome.DELIVERED
    bodies = {r.content for r in receiver.requests}
    signatures = {r.headers[SIGNATURE_HEADER] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(bodies) == 1 and len(signatures) == 1


def test_out_of_attempts_or_a_4xx_gives_up(store: JobStore) -> None:
    job_id = finished_job(store)
    later = Later()
    assert notifier(store, Receiver(503), later).deliver(Delivery(job_id, "finished", attempt=3, body="{}",
                                                                  delivery_id="d")) is Outcome.FAILED
    assert notifier(store, Receiver(404), later).deliver(Delivery(job_id, "finished")) is Outcome.FAILED
    assert notifier(store, Receiver(302), later).deliver(Delivery(job_id, "finished")) is Outcome.FAILED
    assert later == []
    assert notifier(store, Receiver(429), later).deliver(Delivery(job_id, "finished")) is Outcome.RETRYING


def test_a_name_that_now_resolves_inside_is_refused_at_send_time(store: JobStore) -> None:
    job_id = finished_job(store, callback_url="https://rebind.example.com/h")
    public = CallbackPolicy(True, resolve=resolver({"rebind.example.com": [PUBLIC_V4]}))
    assert public.problem("https://rebind.example.com/h") is None  # what the submission saw
    rebound = CallbackPolicy(True, resolve=resolver({"rebind.example.com": ["127.0.0.1"]}))
    receiver, later = Receiver(), Later()
    assert notifier(store, receiver, later, policy=rebound).deliver(Delivery(job_id, "finished")) is Outcome.REFUSED
    assert receiver.requests == [] and later == []


def test_the_tenant_default_is_used_when_the_job_names_none(store: JobStore) -> None:
    job_id = finished_job(store, callback_url=None)
    receiver = Receiver(200)
    notify = notifier(store, receiver, Later(), tenant_urls={"contoso": f"https://{PUBLIC_V4}/tenant-hook"})
    assert notify.deliver(Delivery(job_id, "finished")) is Outcome.DELIVERED
    assert str(receiver.requests[0].url) == f"https://{PUBLIC_V4}/tenant-hook"


def test_nothing_is_sent_without_a_callback_or_a_secret(store: JobStore) -> None:
    receiver, later = Receiver(), Later()
    assert notifier(store, receiver, later).deliver(Delivery(finished_job(store, "j2", None), "finished")) \
        is Outcome.SKIPPED
    assert notifier(store, receiver, later).deliver(Delivery("no-such-job", "finished")) is Outcome.SKIPPED
    unsigned = Notifier(store, secret=None, policy=POLICY, http=httpx.Client(transport=httpx.MockTransport(receiver)),
                        send_later=later)
    assert unsigned.deliver(Delivery(finished_job(store, "j3"), "finished")) is Outcome.SKIPPED
    assert receiver.requests == [] and later == []


def test_a_dry_run_plan_is_sent_without_the_seat_table(store: JobStore, redis_client: redis.Redis) -> None:
    job_id = finished_job(store)
    redis_client.hset(f"bl:job:{job_id}:plan", mapping={"changes": 2, "need:sku": 2, "planned": 2})
    receiver = Receiver(200)
    notifier(store, receiver, Later()).deliver(Delivery(job_id, "finished"))
    plan = json.loads(receiver.requests[0].content)["plan"]
    assert plan["changes"] == 2 and plan["seats"] is None and "needed" not in plan


def test_delivery_round_trips_as_a_task_argument() -> None:
    delivery = Delivery("j", "paused", attempt=2, body='{"id":"j"}', delivery_id="abc")
    assert Delivery.from_json(json.loads(json.dumps(delivery.to_json()))) == delivery
    assert Delivery("j", "finished").to_json() == {"job_id": "j", "event": "finished", "attempt": 1}


def test_the_job_side_trigger_only_queues_on_end_and_pause() -> None:
    later = Later()
    trigger = NotifyOnEnd(later)
    for event in JobEvent:
        trigger.job_event("j", "contoso", event, {})
    trigger.users_finished("j", "contoso", [UserResult(row=2, user="u", status=UserStatus.SUCCEEDED)])
    assert later == [(Delivery("j", "paused"), 0.0), (Delivery("j", "finished"), 0.0)]
