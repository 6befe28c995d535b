"""Tenant profiles that follow their file: an edit takes effect without a restart.

The file (and every file a profile names: certificate, CA bundle) is looked at with `stat` at most
every CHECK_INTERVAL_S, or at once through `refresh`. When one changed it is read again; each
profile whose settings or named files changed gets a new `generation`, so whoever built a Graph
client from it knows to build a new one. A re-read that fails (a half-saved file, a bad value)
keeps the profiles in force, logs why, and is tried again at the next change.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 2.0

_Stamp = tuple[tuple[str, int, int, int] | tuple[str], ...]


class NamesFiles(Protocol):
    """A profile, as far as reloading cares: the files it names besides the profiles file."""

    @property
    def certificate_path(self) -> Path | None: ...

    @property
    def ca_bundle(self) -> Path | None: ...


P = TypeVar("P", bound=NamesFiles)


@dataclass(frozen=True)
class _Entry(Generic[P]):
    profile: P
    file_digests: tuple[str, ...]
    generation: int


def _named_files(profile: NamesFiles) -> list[Path]:
    return [p for p in (profile.certificate_path, profile.ca_bundle) if p is not None]


def _files_of(profiles: Iterable[NamesFiles]) -> list[Path]:
    """Every file the profiles name, once each, in a stable order."""
    return sorted({f for p in profiles for f in _named_files(p)})


def _stamp(paths: list[Path]) -> _Stamp:
    """What `stat` says of each file: enough to notice an edit, a replacement or a removal."""
    out: list[tuple[str, int, int, int] | tuple[str]] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            out.append((str(path),))
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


class TenantProfiles(Generic[P]):
    """The profiles of one file as `load` reads them, re-read when the file or a file they name changes."""

    def __init__(self, path: Path | None, load: Callable[[Path], dict[str, P]], *,
                 check_interval_s: float = CHECK_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._load = load
        self._interval_s = check_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry[P]] | None = None
        self._loaded: Mapping[str, P] = {}  # replaced whole at each reload, never changed in place
        self._stamp: _Stamp = ()
        self._checked_at = 0.0
        self._generations = itertools.count(1)

    def current(self) -> dict[str, P]:
        """The profiles in force, looking at the files if the last look is older than the check interval.

        The first read's errors propagate (a bad file stops the start); later ones are logged.
        """
        with self._lock:
            if self._entries is None or self._clock() - self._checked_at >= self._interval_s:
                self._check()
            return self._profiles()

    def refresh(self) -> dict[str, P]:
        """The profiles in force after looking at the files now (cheap: a `stat` per file)."""
        with self._lock:
            self._check()
            return self._profiles()

    def loaded(self) -> Mapping[str, P]:
        """The profiles as last read, without looking at the files or taking the lock.

        For readers that must never block nor log (a log formatter): a new mapping after each reload.
        """
        return self._loaded

    def generation(self, name: str) -> int | None:
        """A number that changes whenever profile `name` or a file it names changes; None if unknown."""
        with self._lock:
            entry = (self._entries or {}).get(name)
            return None if entry is None else entry.generation

    def _profiles(self) -> dict[str, P]:
        return {name: entry.profile for name, entry in (self._entries or {}).items()}

    def _check(self) -> None:
        """Re-read the profiles if any file changed since the last look (call with the lock held)."""
        self._checked_at = self._clock()
        if self._path is None:
            self._entries = {}
            self._loaded = {}
            return
        old = self._entries or {}
        stamp = _stamp([self._path, *_files_of(e.profile for e in old.values())])
        if self._entries is not None and stamp == self._stamp:
            return
        try:
            loaded = self._load(self._path)
        except Exception as exc:
            if self._entries is None:
                raise
            self._stamp = stamp  # tried again at the next change, not at every look
            log.error("tenant profiles not reloaded, the ones in force stay: %s", exc)
            return
        # Each stamp is taken before its file is read, so an edit made meanwhile is seen at the next look.
        files_stamp = _stamp(_files_of(loaded.values()))
        entries: dict[str, _Entry[P]] = {}
        for name, profile in loaded.items():
            digests = tuple(_digest(f) for f in _named_files(profile))
            before = old.get(name)
            if before is not None and before.profile == profile and before.file_digests == digests:
                entries[name] = before
            else:
                entries[name] = _Entry(profile, digests, next(self._generations))
                if self._entries is not None:
                    log.warning("tenant profile %r %s", name, "changed" if before else "added")
        for name in old.keys() - entries.keys():
            log.warning("tenant profile %r removed", name)
        self._stamp = stamp[:1] + files_stamp  # the files the new profiles name are watched from now on
        self._entries = entries
        self._loaded = self._profiles()
