"""The capacity report's pieces: key families, and its section kept when the rest of the report is rewritten."""

from __future__ import annotations

from pathlib import Path

from bench.capacity import BEGIN, END, family, kept_section, splice


def test_every_key_of_a_job_falls_in_one_family() -> None:
    job = "abc"
    assert family("bl:job:abc", job) == "job record"
    assert family("bl:job:abc:ops:12", job).startswith("operations")
    assert family("bl:job:abc:res", job).startswith("results")
    assert family("bl:job:abc:before", job) == "plan: before states"
    assert family("bl:job:abc:att", job).startswith("write attempts")
    assert family("bl:job:abc:sec:1700000000", job).startswith("other")


def test_the_section_is_replaced_in_place_or_appended(tmp_path: Path) -> None:
    section = f"{BEGIN}\n## Capacity\nnew\n{END}\n"
    report = f"# Benchmarks\n\nintro\n\n{BEGIN}\n## Capacity\nold\n{END}\n\n## 1. Ceiling\n"
    assert splice(report, section) == f"# Benchmarks\n\nintro\n\n{section}\n## 1. Ceiling\n"
    assert splice("# Benchmarks\n", section) == f"# Benchmarks\n\n{section}"
    path = tmp_path / "BENCHMARKS.md"
    assert kept_section(path) is None
    path.write_text(report, encoding="utf-8")
    kept = kept_section(path)
    assert kept is not None and "old" in kept
    assert splice("# Rewritten\n", kept).endswith(f"{BEGIN}\n## Capacity\nold\n{END}\n")
