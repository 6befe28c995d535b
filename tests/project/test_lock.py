"""The requirements files pip installs from are the lock's own pins (exported by `make lock`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", re.M)


def pins(path: Path) -> dict[str, str]:
    return {name.lower().replace("_", "-"): version for name, version in PIN.findall(path.read_text())}


def test_every_exported_pin_is_the_locked_version_with_hashes() -> None:
    locked = {p["name"]: p["version"] for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]
              if "version" in p}
    for name in ("requirements.lock", "requirements-dev.lock"):
        exported = pins(ROOT / name)
        assert exported, f"{name} has no pins"
        assert {pkg: locked.get(pkg) for pkg in exported} == exported, f"{name} differs from uv.lock: run make lock"
        text = (ROOT / name).read_text()
        assert all("--hash=sha256:" in block for block in re.split(r"\n(?=[A-Za-z0-9])", text) if "==" in block)
    runtime, dev = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-dev.lock")
    assert runtime.items() <= dev.items()  # the dev lock is the product's plus the tools
