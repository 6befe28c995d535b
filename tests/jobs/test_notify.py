"""Notifications: the signed POST to each callback, per-tenant secrets, retries from the outbox, outages."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import redis

from cli.localstack import EmbeddedRedis
from config import Settings
from jobs.events import JobEvent
from jobs.models import Operation, UserResult, UserStatus
from jobs.notify import (
    Delivery,
    DeliveryOutcome,
    Destination,
    Notifier,
    NotifyOnEnd,
    Retries,
    new_delivery,
    tenant_callbacks,
    tenant_secrets,
)
from jobs.outbox import Outbox
from jobs.record import JobSpec
from jobs.store import JobStore
from tests.fakes import FakeClock
from webhooks.policy import CallbackPolicy
from webhooks.resolver import Resolver
from webhooks.sender import Sender
from webhooks.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_V2_HEADER,
    TIMESTAMP_HEADER,
    hmac_sha256,
    signed_content,
)

SECRET = b"webhook-secret-for-tests"
TENANT_SECRET = b"contoso-own-webhook-secret"
PUBLIC_V4 = "93.184.215.14"
JOB_HOOK = "https://hooks.example.com/h"
TENANT_HOOK = f"https://{PUBLIC_V4}/tenant-hook"
LEASE_S = 300.0


def resolver(answers: dict[str, Sequence[str]]) -> Resolver:
    """A DNS stand-in: host -> addresses (unknown hosts do not resolve)."""
    def lookup(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise OSError(f"{host}: name does not resolve")
        return answers[host]

    return Resolver(lookup)


POLICY = CallbackPolicy(resolver=resolver({"hooks.example.com": [PUBLIC_V4]}))


class Receiver:
    """An httpx MockTransport answering with the statuses given, in turn (then 200); records every request."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)

    def to(self, url: str) -> list[httpx.Request]:
        return [r for r in self.requests if str(r.url) == url]


def mock_sender(receiver: Receiver) -> Sender:
    return Sender(httpx.Client(transport=httpx.MockTransport(receiver)))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(redis_client: redis.Redis, clock: FakeClock) -> JobStore:
    return JobStore(redis_client, retention_s=3600)


@pytest.fixture
def outbox(redis_client: redis.Redis, clock: FakeClock) -> Outbox:
    return Outbox(redis_client, retention_s=3600, clock=clock)


def finished_job(store: JobStore, job_id: str = "j1", callback_url: str | None = JOB_HOOK,
                 tenant: str = "contoso") -> str:
    """A committed job of two users, both succeeded."""
    store.stage(job_id, tenant, [Operation(row=r, user=f"u{r}@x", remove=("sku",)) for r in (2, 3)], 10)
    store.commit(job_id, JobSpec(source="csv", callback_url=callback_url))
    store.record_results(job_id, [UserResult(row=r, user=f"u{r}@x", status=UserStatus.SUCCEEDED) for r in (2, 3)])
    return job_id


def notifier(store: JobStore, outbox: Outbox, receiver: Receiver, clock: FakeClock, *,
             policy: CallbackPolicy = POLICY, secrets: dict[str, bytes] | None = None,
             tenant_urls: dict[str, str] | None = None, legacy: bool = True,
             outcomes: list[DeliveryOutcome] | None = None) -> Notifier:
    seen = outcomes if outcomes is not None else []
    own = secrets if secrets is not None else {}
    return Notifier(store, outbox, policy=policy, sender=mock_sender(receiver),
                    secret_for=lambda tenant: own.get(tenant, SECRET), tenant_url=(tenant_urls or {}).get,
                    legacy_signature=legacy, retries=Retries(3, 10.0, random.Random(1)), lease_s=LEASE_S,
                    clock=clock, observe=seen.append)


def queued(outbox: Outbox, event: JobEvent = JobEvent.FINISHED, job_id: str = "j1") -> Delivery:
    """A notification as the trigger leaves it: kept in the outbox, its task queued."""
    delivery = new_delivery(job_id, event)
    outbox.put({delivery.delivery_id: (delivery.to_json(), LEASE_S)})
    return delivery


def v2_signature_ok(secret: bytes, request: httpx.Request) -> bool:
    content = signed_content(int(request.headers[TIMESTAMP_HEADER]), request.headers[DELIVERY_HEADER],
                             request.headers[EVENT_HEADER], request.content)
    return request.headers[SIGNATURE_V2_HEADER] == hmac_sha256(secret, content)


# --- the POST --------------------------------------------------------------------------------------------

def test_the_job_is_posted_signed_with_a_timestamp_and_pinned_to_the_checked_address(
    store: JobStore, outbox: Outbox, clock: FakeClock
) -> None:
    job_id = finished_job(store)
    receiver, outcomes = Receiver(204), []
    assert notifier(store, outbox, receiver, clock, outcomes=outcomes).deliver(queued(outbox)) == [
        DeliveryOutcome.DELIVERED]
    assert outcomes == [DeliveryOutcome.DELIVERED] and outbox.pending() == 0
    (request,) = receiver.requests
    assert request.method == "POST" and str(request.url) == f"https://{PUBLIC_V4}/h"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert request.headers[EVENT_HEADER] == "finished" and len(request.headers[DELIVERY_HEADER]) == 32
    assert request.headers[TIMESTAMP_HEADER] == str(int(clock.t))
    # Timestamp, delivery id, event and body signed together; the older body-only signature beside it.
    assert v2_signature_ok(SECRET, request)
    assert request.headers[SIGNATURE_HEADER] == hmac_sha256(SECRET, request.content)
    job = json.loads(request.content)
    progress = store.progress(job_id)
    assert progress is not None
    expected_job = progress.to_json()
    expected_job["plan"] = {**{k: v for k, v in expected_job["plan"].items() if k not in ("needed", "released")},
                            "seats": []}
    assert job == expected_job
    assert (job["id"], job["tenant"], job["status"], job["succeeded"]) == (job_id, "contoso", "completed", 2)


def test_a_signature_does_not_survive_a_change_of_event_delivery_or_time(
    store: JobStore, outbox: Outbox, clock: FakeClock
) -> None:
    finished_job(store)
    receiver = Receiver(200)
    notifier(store, outbox, receiver, clock).deliver(queued(outbox))
    (request,) = receiver.requests
    for header, other in ((EVENT_HEADER, "paused"), (DELIVERY_HEADER, "f" * 32), (TIMESTAMP_HEADER, "1")):
        forged = httpx.Request("POST", request.url, headers={**request.headers, header.lower(): other},
                               content=request.content)
        assert not v2_signature_ok(SECRET, forged), header


def test_the_older_signature_can_be_turned_off(store: JobStore, outbox: Outbox, clock: FakeClock) -> None:
    finished_job(store)
    receiver = Receiver(200)
    notifier(store, outbox, receiver, clock, legacy=False).deliver(queued(outbox))
    (request,) = receiver.requests
    assert SIGNATURE_HEADER not in request.headers and v2_signature_ok(SECRET, request)


def test_each_tenant_signs_with_its_own_secret_and_the_global_one_is_the_fallback(
    store: JobStore, outbox: Outbox, clock: FakeClock
) -> None:
    finished_job(store, "j1", tenant="contoso")
    finished_job(store, "j2", tenant="fabrikam")
    receiver = Receiver()
    notify = notifier(store, outbox, receiver, clock, secrets={"contoso": TENANT_SECRET})
    notify.deliver(queued(outbox, job_id="j1"))
    notify.deliver(queued(outbox, job_id="j2"))
    contoso, fabrikam = receiver.requests
    assert json.loads(contoso.content)["tenant"] == "contoso" and v2_signature_ok(TENANT_SECRET, contoso)
    assert not v2_signature_ok(SECRET, contoso)  # another tenant's receiver cannot be fed contoso's bodies
    assert json.loads(fabrikam.content)["tenant"] == "fabrikam" and v2_signature_ok(SECRET, fabrikam)


# --- who is told -----------------------------------------------------------------------------------------

def test_the_job_callback_and_the_tenant_callback_are_both_told(store: JobStore, outbox: Outbox,
                                                                clock: FakeClock) -> None:
    finished_job(store)
    receiver = Receiver(200, 200)
    outcomes = notifier(store, outbox, receiver, clock, tenant_urls={"contoso": TENANT_HOOK}).deliver(queued(outbox))
    assert outcomes == [DeliveryOutcome.DELIVERED, DeliveryOutcome.DELIVERED]
    (job_post,), (tenant_post,) = receiver.to(f"https://{PUBLIC_V4}/h"), receiver.to(TENANT_HOOK)
    assert job_post.content == tenant_post.content
    assert job_post.headers[DELIVERY_HEADER] != tenant_post.headers[DELIVERY_HEADER]  # each its own delivery


def test_the_tenant_callback_alone_when_the_job_names_none_and_once_when_both_are_one(
    store: JobStore, outbox: Outbox, clock: FakeClock
) -> None:
    finished_job(store, "j1", callback_url=None)
    finished_job(store, "j2", callback_url=TENANT_HOOK)
    receiver = Receiver()
    notify = notifier(store, outbox, receiver, clock, tenant_urls={"contoso": TENANT_HOOK})
    assert notify.deliver(queued(outbox, job_id="j1")) == [DeliveryOutcome.DELIVERED]
    assert notify.deliver(queued(outbox, job_id="j2")) == [DeliveryOutcome.DELIVERED]
    assert [json.loads(r.content)["id"] for r in receiver.to(TENANT_HOOK)] == ["j1", "j2"]


def test_nothing_is_sent_without_a_callback_a_job_or_a_secret(store: JobStore, outbox: Outbox,
                                                              clock: FakeClock) -> None:
    finished_job(store, "j2", callback_url=None)
    finished_job(store, "j3", tenant="unsigned")
    receiver = Receiver()
    notify = Notifier(store, outbox, policy=POLICY, sender=mock_sender(receiver),
                      secret_for=lambda tenant: None if tenant == "unsigned" else SECRET, tenant_url=lambda _: None,
                      clock=clock)
    for job_id in ("j2", "no-such-job", "j3"):
        assert notify.deliver(queued(outbox, job_id=job_id)) == [DeliveryOutcome.SKIPPED]
    assert receiver.requests == [] and outbox.pending() == 0


def test_a_dry_run_plan_is_sent_without_the_seat_table(store: JobStore, outbox: Outbox, clock: FakeClock,
                                                       redis_client: redis.Redis) -> None:
    job_id = finished_job(store)
    redis_client.hset(f"bl:job:{job_id}:plan", mapping={"changes": 2, "need:sku": 2, "planned": 2})
    receiver = Receiver(200)
    notifier(store, outbox, receiver, clock).deliver(queued(outbox))
    plan = json.loads(receiver.requests[0].content)["plan"]
    assert plan["changes"] == 2 and plan["seats"] is None and "needed" not in plan


# --- retries, from the outbox ----------------------------------------------------------------------------

def test_a_5xx_is_tried_again_from_the_outbox_after_the_backoff_with_the_same_body_and_id(
    store: JobStore, outbox: Outbox, clock: FakeClock
) -> None:
    finished_job(store)
    receiver = Receiver(500, httpx.ConnectError("refused"), 200)
    notify = notifier(store, outbox, receiver, clock)
    assert notify.deliver(queued(outbox)) == [DeliveryOutcome.RETRYING]
    clock.advance(7.9)
    assert outbox.due(LEASE_S) == []  # 10 s ± 20 %: not before 8 s
    clock.advance(4.2)
    (second,) = [Delivery.from_json(p) for p in outbox.due(LEASE_S)]
    assert second.attempt == 2 and second.to is Destination.JOB
    assert notify.deliver(second) == [DeliveryOutcome.RETRYING]  # a connection error: retried too
    clock.advance(23.9)
    assert outbox.due(LEASE_S) == []  # 30 s ± 20 %
    clock.advance(12.2)
    (third,) = [Delivery.from_json(p) for p in outbox.due(LEASE_S)]
    assert notify.deliver(third) == [DeliveryOutcome.DELIVERED] and outbox.pending() == 0
    assert len(receiver.requests) == 3 and len({r.content for r in receiver.requests}) == 1
    assert len({r.headers[DELIVERY_HEADER] for r in receiver.requests}) == 1
    # Each attempt is signed afresh: a retry minutes later is not stale at the receiver.
    stamps = [int(r.headers[TIMESTAMP_HEADER]) for r in receiver.requests]
    assert stamps == sorted(stamps) and stamps[2] - stamps[0] >= 36
    assert all(v2_signature_ok(SECRET, r) for r in receiver.requests)


def test_out_of_attempts_or_a_4xx_gives_up(store: JobStore, outbox: Outbox, clock: FakeClock) -> None:
    finished_job(store)
    for answers, outcome in (((404,), DeliveryOutcome.FAILED), ((302,), DeliveryOutcome.FAILED),
                             ((503, 503, 503), DeliveryOutcome.FAILED), ((429,), DeliveryOutcome.RETRYING)):
        receiver = Receiver(*answers)
        notify = notifier(store, outbox, receiver, clock)
        got = notify.deliver(queued(outbox))
        while got == [DeliveryOutcome.RETRYING] and receiver.answers:
            clock.advance(1000)
            got = notify.deliver(Delivery.from_json(outbox.due(LEASE_S)[0]))
        assert got == [outcome], answers
        if outcome is DeliveryOutcome.FAILED:
            assert outbox.pending() == 0
        outbox.redis.flushdb()
        finished_job(store)


def test_a_name_that_now_resolves_inside_is_refused_at_send_time(store: JobStore, outbox: Outbox,
                                                                 clock: FakeClock) -> None:
    finished_job(store, callback_url="https://rebind.example.com/h")
    CallbackPolicy(resolver=resolver({"rebind.example.com": [PUBLIC_V4]})).check("https://rebind.example.com/h")
    rebound = CallbackPolicy(resolver=resolver({"rebind.example.com": ["127.0.0.1"]}))
    receiver = Receiver()
    assert notifier(store, outbox, receiver, clock, policy=rebound).deliver(queued(outbox)) == [
        DeliveryOutcome.REFUSED]
    assert receiver.requests == [] and outbox.pending() == 0


def test_a_message_for_a_notification_already_done_is_dropped(store: JobStore, outbox: Outbox,
                                                               clock: FakeClock) -> None:
    finished_job(store)
    receiver = Receiver(200)
    notify = notifier(store, outbox, receiver, clock)
    delivery = queued(outbox)
    assert notify.deliver(delivery) == [DeliveryOutcome.DELIVERED]
    assert notify.deliver(delivery) == [DeliveryOutcome.SKIPPED]  # the same message again (redelivered)
    assert len(receiver.requests) == 1


def test_an_attempt_lost_on_the_way_is_sent_again_by_the_sweeper_after_the_lease(
    store: JobStore, outbox: Outbox, clock: FakeClock
) -> None:
    finished_job(store)
    delivery = queued(outbox)  # its task message never arrives (a broker outage, a killed worker)
    clock.advance(LEASE_S - 1)
    assert outbox.due(LEASE_S) == []
    clock.advance(2)
    (again,) = outbox.due(LEASE_S)
    assert Delivery.from_json(again) == delivery
    assert outbox.due(LEASE_S) == []  # taken: not sent twice by two sweepers
    receiver = Receiver(200)
    assert notifier(store, outbox, receiver, clock).deliver(Delivery.from_json(again)) == [
        DeliveryOutcome.DELIVERED]


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_dir=tmp_path, appendonly=True).start()
    try:
        yield server
    finally:
        server.close()


def test_a_redis_outage_during_an_attempt_defers_it_and_it_is_sent_once_redis_is_back(
    restartable_redis: EmbeddedRedis, clock: FakeClock
) -> None:
    client = redis.Redis.from_url(restartable_redis.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    store, outbox = JobStore(client, retention_s=3600), Outbox(client, retention_s=3600, clock=clock)
    finished_job(store)
    delivery = queued(outbox)
    receiver, outcomes = Receiver(200), []
    notify = notifier(store, outbox, receiver, clock, outcomes=outcomes)
    restartable_redis.stop()
    assert notify.deliver(delivery) == [DeliveryOutcome.DEFERRED]  # logged, not raised, not lost
    assert outcomes == [DeliveryOutcome.DEFERRED] and receiver.requests == []
    restartable_redis.start()
    clock.advance(LEASE_S + 1)
    (again,) = outbox.due(LEASE_S)
    assert notify.deliver(Delivery.from_json(again)) == [DeliveryOutcome.DELIVERED]
    assert len(receiver.requests) == 1 and outbox.pending() == 0
    client.close()


def test_delivery_round_trips_as_a_task_argument() -> None:
    delivery = Delivery("j", JobEvent.PAUSED, "abc", Destination.TENANT, attempt=2, body='{"id":"j"}')
    assert Delivery.from_json(json.loads(json.dumps(delivery.to_json()))) == delivery
    assert Delivery("j", JobEvent.FINISHED, "d1").to_json() == {"job_id": "j", "event": "finished",
                                                                "delivery_id": "d1", "attempt": 1}


def test_a_message_queued_before_the_outbox_is_still_delivered(store: JobStore, outbox: Outbox,
                                                               clock: FakeClock) -> None:
    finished_job(store)
    receiver = Receiver(200)
    legacy = Delivery.from_json({"job_id": "j1", "event": "finished", "attempt": 1})
    assert notifier(store, outbox, receiver, clock).deliver(legacy) == [DeliveryOutcome.DELIVERED]


# --- the job-side trigger ----------------------------------------------------------------------------------

def test_the_trigger_keeps_and_queues_a_notification_on_end_pause_and_approval_only(outbox: Outbox) -> None:
    queue: list[Delivery] = []
    trigger = NotifyOnEnd(outbox, queue.append, enabled=lambda tenant: tenant == "contoso")
    for event in JobEvent:
        trigger.job_event("j", "contoso", event, {})
    trigger.job_event("j", "unsigned", JobEvent.FINISHED, {})  # no secret applies: nothing to send
    trigger.users_finished("j", "contoso", [UserResult(row=2, user="u", status=UserStatus.SUCCEEDED)])
    assert [(d.job_id, d.event, d.to) for d in queue] == [
        ("j", JobEvent.PAUSED, None), ("j", JobEvent.FINISHED, None), ("j", JobEvent.AWAITING_APPROVAL, None),
        ("j", JobEvent.APPROVED, None), ("j", JobEvent.REJECTED, None)]
    assert outbox.pending() == 5


def test_a_notification_the_broker_refuses_stays_in_the_outbox(outbox: Outbox, clock: FakeClock) -> None:
    def broker_down(_: Delivery) -> None:
        raise ConnectionError("broker unreachable")

    NotifyOnEnd(outbox, broker_down, enabled=lambda _: True).job_event("j", "contoso", JobEvent.FINISHED, {})
    clock.advance(LEASE_S + 1)
    (kept,) = outbox.due(LEASE_S)
    assert (kept["job_id"], kept["event"]) == ("j", "finished")


def test_tenant_secrets_and_callbacks_are_read_from_the_profiles_in_force(
    tmp_path: Path, store: JobStore, outbox: Outbox, clock: FakeClock
) -> None:
    tenants = tmp_path / "tenants.toml"
    base = '[tenants.contoso]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s3cret-value"\n'
    tenants.write_text(base)
    settings = Settings(_env_file=None, tenants_file=tenants,  # type: ignore[call-arg]
                        webhook_secret="global-webhook-secret")
    finished_job(store, callback_url=None)
    receiver = Receiver()
    notify = Notifier(store, outbox, policy=POLICY, sender=mock_sender(receiver),
                      secret_for=tenant_secrets(settings), tenant_url=tenant_callbacks(settings), clock=clock)
    assert notify.deliver(queued(outbox)) == [DeliveryOutcome.SKIPPED]  # no callback anywhere yet
    tenants.write_text(base + f'callback_url = "{TENANT_HOOK}"\nwebhook_secret = "contoso-own-secret"\n')
    settings.profiles.refresh()
    assert notify.deliver(queued(outbox)) == [DeliveryOutcome.DELIVERED]
    (request,) = receiver.requests
    assert str(request.url) == TENANT_HOOK and v2_signature_ok(b"contoso-own-secret", request)
    assert tenant_secrets(settings)("not-configured-here") == b"global-webhook-secret"
