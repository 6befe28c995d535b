"""Small helpers shared across test packages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


README = Path(__file__).resolve().parent.parent / "README.md"
RECEIVER_CHECK_MARK = "# the receiver's check"


def readme_receiver_check() -> Callable[..., dict[str, Any]]:
    """`verified_job` exactly as the README gives it to receivers (its Python block, run here)."""
    text = README.read_text(encoding="utf-8")
    start = text.index(RECEIVER_CHECK_MARK)
    code = text[start:text.index("```", start)]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md (the receiver's check)", "exec"), namespace)  # noqa: S102 - our own README
    check: Callable[..., dict[str, Any]] = namespace["verified_job"]
    return check
