"""Host name lookups with a deadline and a cap on how many run at once, overall and per caller.

The system resolver (`getaddrinfo`) cannot be interrupted: a lookup that hangs keeps its thread
until the resolver gives up by itself. So each lookup runs in a thread of its own, the caller waits
for it at most `timeout_s`, and a lookup counts against the caps until it really ends. A caller
over its cap, or any caller when all slots are taken, is refused at once instead of queued, so a
slow DNS server can hold at most `max_in_flight` of these threads and none of the caller's.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

Lookup = Callable[[str, int], Sequence[str]]


def system_lookup(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for a host (OSError when none)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


class LookupFailed(Exception):
    """The name did not resolve, or not within the time allowed; the message says which (for logs)."""


class LookupBusy(Exception):
    """Too many lookups run at once (overall, or for this caller): try again shortly."""


class Resolver:
    """Looks names up in threads of its own: each caller waits at most `timeout_s`, a few lookups at once."""

    def __init__(self, lookup: Lookup = system_lookup, *, timeout_s: float = 2.0, max_in_flight: int = 8,
                 max_per_caller: int = 2) -> None:
        self._lookup = lookup
        self.timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._max_per_caller = min(max_per_caller, max_in_flight)
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()

    def addresses(self, host: str, port: int, *, caller: str = "", timeout_s: float | None = None) -> list[str]:
        """The host's addresses; LookupFailed when it has none in time, LookupBusy when the caps are reached."""
        with self._lock:
            if self._in_flight.total() >= self._max_in_flight or self._in_flight[caller] >= self._max_per_caller:
                raise LookupBusy("too many callback checks at once")
            self._in_flight[caller] += 1
        future: Future[list[str]] = Future()
        thread = threading.Thread(target=self._run, args=(future, host, port, caller), daemon=True,
                                  name="bulklicense-dns")
        try:
            thread.start()
        except RuntimeError:
            self._release(caller)
            raise LookupBusy("no thread for a lookup") from None
        wait_s = self.timeout_s if timeout_s is None else max(0.0, min(timeout_s, self.timeout_s))
        try:
            return future.result(timeout=wait_s)
        except FutureTimeout:
            raise LookupFailed(f"no answer within {wait_s:.1f}s") from None

    def _run(self, future: Future[list[str]], host: str, port: int, caller: str) -> None:
        try:
            found = list(self._lookup(host, port))
            if found:
                future.set_result(found)
            else:
                future.set_exception(LookupFailed("no address"))
        except (OSError, UnicodeError) as exc:
            future.set_exception(LookupFailed(f"does not resolve ({type(exc).__name__})"))
        except BaseException as exc:  # whatever it is, the waiter hears of it and the slot is freed
            future.set_exception(exc)
        finally:
            self._release(caller)

    def _release(self, caller: str) -> None:
        with self._lock:
            self._in_flight[caller] -= 1
            if self._in_flight[caller] <= 0:
                del self._in_flight[caller]
