"""Secrets and access (issue 5), on real processes with DEBUG logging everywhere, in text and in JSON.

Whole jobs run through the API and a worker against graphsim; then every place the product writes
to is scanned: the API's and workers' logs, a full dump of Redis (every key, read by type, Celery's
queue and `unacked` messages decoded, plus an uncompressed RDB snapshot), the results as JSON and
CSV, the job/progress/list responses and every error body a client was given. Nothing may contain
a client secret, an access token, a certificate's private key or an API key.

Tokens are searched for twice: as the exact strings graphsim issued during the run (its control
surface lists them) and by shape: every graphsim token starts with the same base64url JWT header
(HS256, kid "graphsim") and payload prefix (`{"aud":"https://graph.microsoft.com"`), and any JWT at
all (MSAL's certificate client assertions included) is caught by a generic `eyJ….eyJ….…` pattern.
A token fetched from graphsim by this test proves the patterns match real ones.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.leaks import needles_for
from tests.e2e.stack import API_KEY, OTHER_KEY, SIM_KEY, Stack, sim_profile

# Each test runs in 1 to 3 s; the first also starts the module's stack. Inner deadlines fail first.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

POWER_BI_PRO = "f8a1db68-be16-40ed-86d5-cb42ce701560"
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
# A secret of the shape Entra issues, registered nowhere: the identity platform refuses it.
WRONG_SECRET = "Wq8Q~Zr1xVn3bLd5fTg7hJk9mP2sC4eA6uY0iO.-"
WEBHOOK_SECRET = "whsec-Secrets-Test-6c1d9e0a4f"
TENANT_WEBHOOK_SECRET = "whsec-Other-Tenant-Test-93ab51"
METRICS_TOKEN = "metrics-token-Secrets-Test-2b7e"
GRAPHSIM_JWT_HEADER = base64.urlsafe_b64encode(
    json.dumps({"typ": "JWT", "alg": "HS256", "kid": "graphsim"}, separators=(",", ":")).encode()
).rstrip(b"=")
GRAPH_TOKEN_PAYLOAD = base64.urlsafe_b64encode(b'{"aud":"https://graph.microsoft.c')  # 33 bytes: no padding
ANY_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def profile(name: str, sim: dict[str, Any], credential: str) -> str:
    return sim_profile(name, sim, credential=credential)


def extra_profiles(sim: dict[str, Any]) -> str:
    return "\n".join([
        profile("other", sim, f'client_secret = "{sim["client_secret"]}"\nwebhook_secret = "{TENANT_WEBHOOK_SECRET}"'),
        profile("churn", sim, f'client_secret = "{sim["client_secret"]}"'),
        profile("simcert", sim, f'certificate_path = "{sim["cert_bundle_path"]}"'),
        profile("badsecret", sim, f'client_secret = "{WRONG_SECRET}"'),
    ])


@pytest.fixture(scope="module", params=["text", "json"])
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    env = {
        "BULKLICENSE_LOG_LEVEL": "DEBUG",
        "BULKLICENSE_LOG_FORMAT": request.param,
        "BULKLICENSE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BULKLICENSE_METRICS_TOKEN": METRICS_TOKEN,
        "BULKLICENSE_RETRY_MAX_ATTEMPTS": "3",
        "BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05",
        "BULKLICENSE_CHUNK_SIZE": "10",
        "BULKLICENSE_SKU_CACHE_TTL_S": "600",
    }
    s = Stack(tmp_path_factory.mktemp("secrets"), sim_args=["--users", "200", "--seed", "6", "--latency-ms", "30"],
              env=env, extra_profiles=extra_profiles)
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


# --- collecting everything the product wrote ------------------------------------------------------

class Haystack:
    """Named blobs of bytes to scan."""

    def __init__(self) -> None:
        self.blobs: list[tuple[str, bytes]] = []

    def add(self, where: str, data: bytes | str) -> None:
        self.blobs.append((where, data.encode() if isinstance(data, str) else data))

    def response(self, where: str, response: httpx.Response) -> None:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.add(f"{where} -> {response.status_code}", headers.encode() + b"\n\n" + response.content)

    def find(self, needle: bytes) -> list[str]:
        return [where for where, data in self.blobs if needle in data]

    def find_re(self, pattern: re.Pattern[bytes]) -> list[tuple[str, bytes]]:
        return [(where, m.group(0)[:80]) for where, data in self.blobs for m in pattern.finditer(data)]


def kombu_expanded(value: bytes) -> bytes:
    """Celery messages carry their body base64-encoded: add the decoded bodies to the value."""
    out = [value]
    try:
        doc = json.loads(value)
    except ValueError:
        return value
    stack: list[Any] = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            body = item.get("body")
            if isinstance(body, str) and (item.get("properties") or {}).get("body_encoding") == "base64":
                out.append(base64.b64decode(body))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return b"\n".join(out)


def redis_dump(client: redis.Redis) -> list[tuple[str, bytes]]:
    """Every key of every database with its value read by type (and its DUMP)."""
    dumped: list[tuple[str, bytes]] = []
    dbs = [0] + [int(k[2:]) for k in client.info("keyspace") if k != "db0"]
    for db in dbs:
        c = redis.Redis(connection_pool=redis.ConnectionPool(**{**client.connection_pool.connection_kwargs,
                                                                "db": db}))
        for key in c.scan_iter(count=1000):
            kind = c.type(key).decode()
            parts: list[bytes] = [key]
            if kind == "string":
                parts.append(c.get(key) or b"")
            elif kind == "hash":
                for f, v in c.hgetall(key).items():
                    parts += [f, kombu_expanded(v)]
            elif kind == "list":
                parts += [kombu_expanded(v) for v in c.lrange(key, 0, -1)]
            elif kind == "set":
                parts += list(c.smembers(key))
            elif kind == "zset":
                parts += [m for m, _ in c.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for _, fields in c.xrange(key):
                    parts += [x for kv in fields.items() for x in kv]
            raw = c.dump(key)
            if raw:
                parts.append(raw)
            dumped.append((f"redis db{db} {kind} {key.decode(errors='replace')}", b"\n".join(parts)))
        c.close()
    return dumped


def rdb_snapshot(stack: Stack, client: redis.Redis) -> bytes:
    """An uncompressed RDB file of the whole dataset."""
    client.config_set("rdbcompression", "no")
    client.save()
    return (Path(stack.workdir) / "redis" / "dump.rdb").read_bytes()


def collect(stack: Stack, hay: Haystack, snapshots: list[tuple[str, bytes]]) -> None:
    """Logs of the API and every worker, Redis now (and the snapshots taken while jobs ran)."""
    for path in sorted(Path(stack.workdir).glob("*.log")):
        if path.name.startswith(("api", "worker")):
            hay.add(f"log {path.name}", path.read_bytes())
    client = redis.Redis.from_url(stack.redis.url)
    try:
        for where, data in redis_dump(client):
            hay.add(where, data)
        hay.add("redis dump.rdb", rdb_snapshot(stack, client))
    finally:
        client.close()
    for where, data in snapshots:
        hay.add(where, data)


def snapshotter(stack: Stack, snapshots: list[tuple[str, bytes]]) -> Callable[[dict[str, Any]], None]:
    """An on_poll callback that dumps Redis while a job runs (Celery messages in flight included)."""
    client = redis.Redis.from_url(stack.redis.url)

    def take(job: dict[str, Any]) -> None:
        for where, data in redis_dump(client):
            snapshots.append((f"{where} (while job {job['id'][:8]} {job['status']})", data))

    return take


def assert_clean(hay: Haystack, secrets: dict[str, str]) -> None:
    leaks: list[str] = []
    for name, secret in secrets.items():
        for needle in needles_for(secret):
            leaks += [f"{name} in {where}" for where in hay.find(needle)]
    for where, match in hay.find_re(ANY_JWT):
        leaks.append(f"JWT in {where}: {match!r}")
    for needle, name in ((GRAPHSIM_JWT_HEADER, "graphsim token header"), (GRAPH_TOKEN_PAYLOAD, "token payload")):
        leaks += [f"{name} in {where}" for where in hay.find(needle)]
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks[:40])


def graphsim_token(stack: Stack, *, client_id: str, secret: str) -> str:
    """A real token from graphsim's token endpoint (to prove the token patterns match)."""
    r = httpx.post(f"{stack.sim['authority']}/oauth2/v2.0/token", verify=stack.tls(),
                   data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
                         "scope": "https://graph.microsoft.com/.default"})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def free_users(stack: Stack) -> list[dict[str, Any]]:
    with stack.control() as control:
        users = control.get("/users").json()["value"]
    return [u for u in users if u.get("usageLocation")
            and not any(a["skuId"] == POWER_BI_PRO for a in u["assignedLicenses"])]


def csv_body(rows: list[tuple[str, str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["user", "add", "remove"])
    writer.writerows(rows)
    return out.getvalue().encode()


def run_job(stack: Stack, hay: Haystack, snapshots: list[tuple[str, bytes]], tenant: str, body: bytes,
            key: str = API_KEY) -> dict[str, Any]:
    """Submit, follow (dumping Redis while it runs) and fetch every view of a job into the haystack."""
    with stack.api(key) as api:
        accepted = api.post("/v1/jobs", params={"tenant": tenant}, content=body, headers={"Content-Type": "text/csv"})
        hay.response(f"submit {tenant}", accepted)
        assert accepted.status_code == 202, accepted.text
    return finish_job(stack, hay, snapshots, accepted.json()["id"], tenant, key)


def finish_job(stack: Stack, hay: Haystack, snapshots: list[tuple[str, bytes]], job_id: str, tenant: str,
               key: str = API_KEY) -> dict[str, Any]:
    """Follow a job to its end (dumping Redis while it runs) and fetch every view of it into the haystack."""
    with stack.api(key) as api:
        job = stack.wait_job(job_id, timeout_s=90, key=key, on_poll=snapshotter(stack, snapshots))
        hay.add(f"progress {tenant}", json.dumps(job))
        for params in ({}, {"format": "csv"}, {"status": "failed"}, {"status": "failed", "format": "csv"}):
            hay.response(f"results {tenant} {params}", api.get(f"/v1/jobs/{job_id}/results", params=params))
        hay.response("job list", api.get("/v1/jobs"))
        hay.response(f"job {tenant}", api.get(f"/v1/jobs/{job_id}"))
    return job


def wait_paused(stack: Stack, job_id: str, on_poll: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Poll a job until it is paused (dumping Redis meanwhile)."""
    deadline = time.monotonic() + 60
    with stack.api() as api:
        while True:
            job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
            on_poll(job)
            if job["status"] == "paused":
                return job
            assert time.monotonic() < deadline and job["pending"], f"job {job_id} did not pause: {job}"
            time.sleep(0.2)


def error_bodies(stack: Stack, hay: Haystack) -> None:
    """Every kind of refusal a client can be given."""
    with stack.api() as api:
        hay.response("bad csv", api.post("/v1/jobs", params={"tenant": "sim"}, content=b"nobody,x\n",
                                         headers={"Content-Type": "text/csv"}))
        hay.response("unknown sku", api.post("/v1/jobs", params={"tenant": "sim"},
                                             content=b"user,add\nx@contoso.example,NOPE\n",
                                             headers={"Content-Type": "text/csv"}))
        hay.response("unknown tenant", api.post("/v1/jobs", params={"tenant": "nope"}, content=b"user\n",
                                                headers={"Content-Type": "text/csv"}))
        hay.response("bad json", api.post("/v1/jobs", content=b'{"tenant": "sim", "operations": [{}]}',
                                          headers={"Content-Type": "application/json"}))
        hay.response("wrong type", api.post("/v1/jobs", content=b"x", headers={"Content-Type": "image/png"}))
        hay.response("unknown job", api.get("/v1/jobs/" + "0" * 32))
    for key in ("not-a-key-0000", API_KEY + "x"):
        hay.response("wrong key", httpx.get(f"{stack.api_url}/v1/jobs", headers={"Authorization": f"Bearer {key}"}))


# --- tests -------------------------------------------------------------------------------------------

def test_the_redis_scan_finds_a_secret_inside_a_celery_message(stack: Stack) -> None:
    """The scanner itself: a canary in the base64 body of a queued Celery-shaped message is found."""
    canary = "Canary7Q~not-a-real-secret-0123456789abcd"
    client = redis.Redis.from_url(stack.redis.url)
    body = base64.b64encode(json.dumps([["job", 0, canary], {}, {}]).encode()).decode()
    message = json.dumps({"body": body, "properties": {"body_encoding": "base64"}, "headers": {}})
    try:
        client.rpush("canary-queue", message)
        client.hset("canary-unacked", "tag", json.dumps([json.loads(message), "", "canary-queue"]))
        hay = Haystack()
        for where, data in redis_dump(client):
            hay.add(where, data)
        with pytest.raises(AssertionError, match="canary in redis db0 list canary-queue"):
            assert_clean(hay, {"canary": canary})
        with pytest.raises(AssertionError, match="canary in redis db0 hash canary-unacked"):
            assert_clean(hay, {"canary": canary})
    finally:
        client.delete("canary-queue", "canary-unacked")
        client.close()


def test_no_secret_or_token_in_logs_redis_results_or_errors(stack: Stack) -> None:
    started = time.monotonic()
    sim = stack.sim
    hay, snapshots = Haystack(), []
    users = free_users(stack)
    with stack.control() as control:
        control.post("/reset")
        # One user is throttled twice (the 429 path), then succeeds.
        control.post("/config", json={"force_429": {"count": 2, "retry_after_s": 0.05,
                                                    "user": users[0]["userPrincipalName"]}})

    # 1. A whole job of 36 users: 30 succeed, 6 fail in Graph's ways.
    rows = [(u["userPrincipalName"], "POWER_BI_PRO", "") for u in users[:30]]
    rows += [(f"left.{i}@contoso.example", "POWER_BI_PRO", "") for i in range(3)]  # user_not_found
    no_ems = [u for u in users[30:] if not any(a["skuId"] == EMS for a in u["assignedLicenses"])]
    rows += [(u["userPrincipalName"], "", "EMS") for u in no_ems[:3]]  # license_not_assigned
    job = run_job(stack, hay, snapshots, "sim", csv_body(rows))
    assert (job["total"], job["succeeded"], job["failed"]) == (36, 30, 6), job
    assert job["throttled"] >= 2, job

    # 2. The 401 path: tokens that are already expired when issued (lifetime 0; a lifetime of a few
    # ms is a race: a resend on a kept-alive connection can reach Graph within it). Every Graph call
    # is refused with 401 and the client refreshes the token once and resends; refused credentials
    # are the tenant's trouble, not the users', so the job pauses as auth_failed and fails nobody.
    # A profile of its own ("churn"), so the worker's first token for it is one of those (its first
    # call is the SKU read the plan needs); a refused upload first fills the API's SKU cache for it
    # while tokens still last. Once tokens last again, the job is resumed and ends.
    with stack.api() as api:
        primed = api.post("/v1/jobs", params={"tenant": "churn"}, content=b"user,add\nx@contoso.example,NOPE\n",
                          headers={"Content-Type": "text/csv"})
    assert primed.status_code == 422, primed.text
    with stack.control() as control:
        expiring = control.post("/config", json={"token_lifetime_s": 0})
        assert expiring.status_code == 200 and expiring.json()["token_lifetime_s"] == 0, expiring.text
        before = control.get("/stats").json()["by_endpoint"]
    try:
        with stack.api() as api:
            accepted = api.post("/v1/jobs", params={"tenant": "churn"}, headers={"Content-Type": "text/csv"},
                                content=csv_body([(u["userPrincipalName"], "POWER_BI_PRO", "") for u in users[40:43]]))
        hay.response("submit churn", accepted)
        assert accepted.status_code == 202, accepted.text
        paused = wait_paused(stack, accepted.json()["id"], snapshotter(stack, snapshots))
    finally:
        with stack.control() as control:
            after = control.get("/stats").json()["by_endpoint"]
            restored = control.post("/config", json={"token_lifetime_s": 3600})
    assert restored.status_code == 200, restored.text
    hay.add("progress churn (paused)", json.dumps(paused))
    assert (paused["paused_reason"], paused["failed"], paused["pending"]) == ("auth_failed", 0, 3), paused

    def grown(endpoint: str, status: str) -> int:
        return after.get(endpoint, {}).get(status, 0) - before.get(endpoint, {}).get(status, 0)

    # One SKU read: sent with a token, refused, a second token fetched, resent, refused; then nothing.
    assert (grown("subscribedSkus", "401"), grown("token", "200"), grown("$batch", "401")) == (2, 2, 0), (
        before, after)
    with stack.api() as api:
        hay.response("resume churn", api.post(f"/v1/jobs/{paused['id']}/resume"))
    job = finish_job(stack, hay, snapshots, paused["id"], "churn")
    assert job["succeeded"] == 3, job

    # 3. A wrong client secret: the identity platform refuses it; the client is told, not shown it.
    with stack.api() as api:
        refused = api.post("/v1/jobs", params={"tenant": "badsecret"}, headers={"Content-Type": "text/csv"},
                           content=csv_body([(users[45]["userPrincipalName"], "POWER_BI_PRO", "")]))
    hay.response("submit badsecret", refused)
    assert refused.status_code == 503 and "AADSTS7000215" in refused.text, refused.text

    error_bodies(stack, hay)
    with stack.control() as control:
        stats = control.get("/stats").json()
    collect(stack, hay, snapshots)

    # The scanner finds what it looks for: a real graphsim token matches every token pattern, and
    # the secret is where it belongs (the tenants file).
    sample = graphsim_token(stack, client_id=sim["client_id"], secret=sim["client_secret"]).encode()
    assert sample.startswith(GRAPHSIM_JWT_HEADER + b"." + GRAPH_TOKEN_PAYLOAD) and ANY_JWT.fullmatch(sample)
    assert sim["client_secret"].encode() in (Path(stack.workdir) / "all-tenants.toml").read_bytes()
    assert any(b"DEBUG" in data for where, data in hay.blobs if where.startswith("log worker"))
    if stack.env["BULKLICENSE_LOG_FORMAT"] == "json":  # the JSON format leaks nothing either, line by line
        for where, data in hay.blobs:
            if where.startswith("log "):
                assert all(isinstance(json.loads(line), dict) for line in data.splitlines()), where
    # Celery's messages were read while queued or in flight (acks_late keeps them in `unacked`),
    # with their base64 bodies decoded (the task's arguments start `[["<job id>", <chunk>, ...`).
    assert any(("unacked" in where or " list bulklicense" in where) and b'"bulklicense.run_chunk"' in data
               and b'[["' in data for where, data in snapshots), sorted({w.split(" (")[0] for w, _ in snapshots})

    with stack.control() as control:
        issued = control.get("/tokens").json()["value"]
    assert len(issued) >= 3  # the API's, the worker's and the refreshed ones
    secrets = {
        **{f"access token #{i}": token for i, token in enumerate(issued)},
        "client secret": sim["client_secret"],
        "readonly client secret": sim["readonly_client_secret"],
        "wrong client secret": WRONG_SECRET,
        "API key (all)": API_KEY,
        "API key (sim)": SIM_KEY,
        "API key (other)": OTHER_KEY,
        "webhook secret": WEBHOOK_SECRET,
        "tenant webhook secret": TENANT_WEBHOOK_SECRET,
        "metrics token": METRICS_TOKEN,
    }
    assert_clean(hay, secrets)
    tokens_issued = stats["by_endpoint"].get("token", {})
    # The 401 path ran: the SKU read was refused, the token refreshed and the read resent (and refused).
    assert stats["by_endpoint"]["subscribedSkus"].get("401", 0) >= 2, stats["by_endpoint"]
    print(f"\n[secrets] scanned {len(hay.blobs)} blobs ({sum(len(d) for _, d in hay.blobs) / 1e6:.1f} MB; "
          f"{len(snapshots)} from Redis while jobs ran); tokens issued by graphsim {tokens_issued}; "
          f"Graph 401s {stats['by_endpoint']['subscribedSkus'].get('401', 0)}; "
          f"429s {stats['throttled_responses']}; "
          f"{time.monotonic() - started:.1f}s")


def test_certificate_profile_leaks_no_private_key(stack: Stack) -> None:
    sim = stack.sim
    hay, snapshots = Haystack(), []
    key_pem = Path(sim["key_path"]).read_bytes()
    body_lines = [line for line in key_pem.splitlines() if line and not line.startswith(b"-----")]
    assert key_pem in Path(sim["cert_bundle_path"]).read_bytes()
    users = [u for u in free_users(stack) if not any(a["skuId"] == EMS for a in u["assignedLicenses"])][:12]
    rows = [(u["userPrincipalName"], "EMS", "") for u in users] + [("gone@contoso.example", "EMS", "")]
    job = run_job(stack, hay, snapshots, "simcert", csv_body(rows))
    assert (job["succeeded"], job["failed"]) == (12, 1), job
    with stack.control() as control:
        final = {u["userPrincipalName"]: u for u in control.get("/users").json()["value"]}
    assert all(EMS in {a["skuId"] for a in final[u["userPrincipalName"]]["assignedLicenses"]} for u in users)
    error_bodies(stack, hay)
    collect(stack, hay, snapshots)

    leaks = [f"private key line {i} in {where}" for i, line in enumerate(body_lines) for where in hay.find(line)]
    leaks += [f"private key (one line) in {where}" for where in hay.find(b"".join(body_lines)[:200])]
    leaks += [f"PEM private key header in {where}" for where, _ in hay.find_re(PEM_PRIVATE_KEY)]
    assert not leaks, "\n".join(leaks[:40])
    # MSAL's signed client assertions and the tokens they bought are credentials too.
    assert_clean(hay, {"client secret": sim["client_secret"]})


def test_api_keys_are_scoped_to_their_tenants(stack: Stack) -> None:
    users = free_users(stack)[60:62]
    with stack.api(SIM_KEY) as sim_api, stack.api(OTHER_KEY) as other_api:
        sim_job = sim_api.post("/v1/jobs", params={"tenant": "sim"}, headers={"Content-Type": "text/csv"},
                               content=csv_body([(users[0]["userPrincipalName"], "POWER_BI_PRO", "")]))
        other_job = other_api.post("/v1/jobs", params={"tenant": "other"}, headers={"Content-Type": "text/csv"},
                                   content=csv_body([(users[1]["userPrincipalName"], "POWER_BI_PRO", "")]))
        assert sim_job.status_code == 202 and other_job.status_code == 202, (sim_job.text, other_job.text)
        sim_id, other_id = sim_job.json()["id"], other_job.json()["id"]

        # Submitting for a tenant the key does not cover: 403, as CSV and as JSON; nothing is created.
        before = len(httpx.get(f"{stack.api_url}/v1/jobs", headers={"Authorization": f"Bearer {API_KEY}"},
                               params={"limit": 500}).json()["value"])
        for api, tenant in ((sim_api, "other"), (other_api, "sim")):
            r = api.post("/v1/jobs", params={"tenant": tenant}, headers={"Content-Type": "text/csv"},
                         content=csv_body([(users[0]["userPrincipalName"], "POWER_BI_PRO", "")]))
            assert r.status_code == 403, r.text
            doc = {"tenant": tenant, "operations": [{"user": users[0]["userPrincipalName"],
                                                     "addLicenses": [{"sku": "POWER_BI_PRO"}]}]}
            r = api.post("/v1/jobs", json=doc)
            assert r.status_code == 403, r.text
        after = len(httpx.get(f"{stack.api_url}/v1/jobs", headers={"Authorization": f"Bearer {API_KEY}"},
                              params={"limit": 500}).json()["value"])
        assert after == before

        # Another tenant's job does not exist for this key: same 404 as a job that never existed.
        for api, foreign, own in ((sim_api, other_id, sim_id), (other_api, sim_id, other_id)):
            never = api.get("/v1/jobs/" + "f" * 32)
            assert never.status_code == 404
            for method, path in (("GET", f"/v1/jobs/{foreign}"), ("GET", f"/v1/jobs/{foreign}/results"),
                                 ("GET", f"/v1/jobs/{foreign}/results?format=csv"),
                                 ("POST", f"/v1/jobs/{foreign}/cancel")):
                r = api.request(method, path)
                assert r.status_code == 404, (method, path, r.text)
                assert r.json()["detail"] == never.json()["detail"].replace("f" * 32, foreign)
            listed = {j["id"] for j in api.get("/v1/jobs", params={"limit": 500}).json()["value"]}
            assert own in listed and foreign not in listed
            assert api.get(f"/v1/jobs/{own}").status_code == 200

    # The foreign cancels changed nothing: both jobs complete.
    assert stack.wait_job(sim_id)["status"] == "completed"
    assert stack.wait_job(other_id)["status"] == "completed"

    # A wrong key is refused with 401, and the refusal does not echo it.
    for wrong in ("wrong-key-0123456789", SIM_KEY + "0", SIM_KEY[:-1], SIM_KEY.upper(), OTHER_KEY[1:]):
        r = httpx.get(f"{stack.api_url}/v1/jobs/{sim_id}", headers={"Authorization": f"Bearer {wrong}"})
        assert r.status_code == 401, (wrong, r.text)
        echoed = "\n".join(f"{k}: {v}" for k, v in r.headers.items()) + r.text
        assert wrong not in echoed, r.text
    assert httpx.get(f"{stack.api_url}/v1/jobs").status_code == 401
    basic = base64.b64encode(f"user:{SIM_KEY}".encode()).decode()
    assert httpx.get(f"{stack.api_url}/v1/jobs", headers={"Authorization": f"Basic {basic}"}).status_code == 401
