"""What a scenario reports: figures, targets met or not, notes and per-process CPU/RSS."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Metric:
    """One figure of a scenario, with its target when the issue sets one."""

    name: str
    value: str
    target: str = ""
    met: bool | None = None
    measured: str = "measured"  # or "projected", "derived"


@dataclass
class ScenarioResult:
    """Everything one scenario found."""

    key: str
    title: str
    setup: list[str] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # per phase (e.g. "1 worker"): process -> {cpu_s, cores, peak_rss_mb}
    processes: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    error: str | None = None
    duration_s: float = 0.0
    values: dict[str, float] = field(default_factory=dict)  # raw numbers other scenarios may use

    def add(self, name: str, value: str, target: str = "", met: bool | None = None,
            measured: str = "measured") -> None:
        """Append a figure."""
        self.metrics.append(Metric(name, value, target, met, measured))


def fmt_s(seconds: float) -> str:
    """Seconds with sensible precision."""
    if seconds >= 100:
        return f"{seconds:,.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def fmt_pct(fraction: float) -> str:
    """A fraction as a percentage."""
    return f"{fraction * 100:.2f} %"


def fmt_rate(per_s: float, unit: str = "users/s") -> str:
    """A rate."""
    return f"{per_s:,.1f} {unit}"
