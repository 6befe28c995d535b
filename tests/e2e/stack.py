"""A whole deployment in child processes: Redis, graphsim, the API and N Celery workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from jobs.demo import Services, start_simulator, wait_http
from jobs.embedded_redis import EmbeddedRedis, free_port

API_KEY = "test-key-all-tenants"
SIM_KEY = "test-key-sim-only"
OTHER_KEY = "test-key-other-only"


class Stack:
    """Real processes wired together as a user would deploy them."""

    def __init__(self, workdir: Path, *, sim_args: list[str], env: dict[str, str] | None = None,
                 redis_appendonly: bool = False, extra_profiles: Any = None) -> None:
        self.workdir = workdir
        self.services = Services(workdir)
        self.redis = EmbeddedRedis(data_dir=workdir / "redis", appendonly=redis_appendonly)
        (workdir / "redis").mkdir(exist_ok=True)
        self.sim_args = sim_args
        self.extra_env = env or {}
        self.workers: list[subprocess.Popen[bytes]] = []
        self.sim: dict[str, Any] = {}
        self.api_url = ""
        self.env: dict[str, str] = {}
        self._worker_count = 0
        self.extra_profiles = extra_profiles

    def start(self, workers: int = 1) -> Stack:
        """Start everything and wait until the API answers."""
        self.redis.start()
        base_env = dict(os.environ)
        self.sim = start_simulator(self.services, base_env, self.sim_args)
        tenants = self.workdir / "all-tenants.toml"
        text = Path(self.sim["profile_path"]).read_text()
        if self.extra_profiles is not None:
            text += "\n" + self.extra_profiles(self.sim)
        tenants.write_text(text)
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.env = {
            **base_env,
            "BULKLICENSE_REDIS_URL": self.redis.url,
            "BULKLICENSE_TENANTS_FILE": str(tenants),
            "BULKLICENSE_API_KEYS": f"{API_KEY}:*,{SIM_KEY}:sim,{OTHER_KEY}:other",
            "BULKLICENSE_LOG_LEVEL": "INFO",
            **self.extra_env,
        }
        self.services.start("api", [sys.executable, "-m", "jobs.cli", "api", "--port", str(api_port)], self.env)
        for _ in range(workers):
            self.start_worker()
        wait_http(f"{self.api_url}/healthz", timeout_s=60)
        return self

    def start_worker(self, concurrency: int = 8) -> subprocess.Popen[bytes]:
        """Start one more Celery worker process."""
        self._worker_count += 1
        proc = self.services.start(
            f"worker{self._worker_count}",
            [sys.executable, "-m", "jobs.cli", "worker", "--concurrency", str(concurrency),
             "-n", f"w{self._worker_count}@%h"],
            self.env,
        )
        self.workers.append(proc)
        return proc

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker process (and wait for it)."""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        """Stop everything."""
        self.services.stop()
        self.redis.stop()

    # --- clients ------------------------------------------------------------------------------
    def api(self, key: str = API_KEY) -> httpx.Client:
        """A client for our API."""
        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def control(self) -> httpx.Client:
        """A client for graphsim's control surface."""
        return httpx.Client(base_url=self.sim["control_url"], verify=self.sim["ca_path"], timeout=60)

    def wait_job(self, job_id: str, *, timeout_s: float = 120, key: str = API_KEY,
                 on_poll: Any = None) -> dict[str, Any]:
        """Poll the job until it reaches a terminal status."""
        deadline = time.monotonic() + timeout_s
        with self.api(key) as api:
            while True:
                job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
                if on_poll is not None:
                    on_poll(job)
                if job["status"] in ("completed", "completed_with_errors", "cancelled", "failed"):
                    return job
                if time.monotonic() > deadline:
                    logs = "\n".join((self.workdir / f"worker{i + 1}.log").read_text(errors="replace")[-3000:]
                                     for i in range(self._worker_count))
                    raise AssertionError(f"job {job_id} not finished after {timeout_s}s: {job}\n{logs}")
                time.sleep(0.2)
