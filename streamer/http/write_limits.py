"""How much one user may write: a rate (a token bucket per user: `writes_per_minute`, with a
burst of as many) and a size per write (`write_max_kb`), so no listener can grow the catalog and
the change log that every region copies without bound. Refusals are 429 with Retry-After, and
413. A master counts every write it applies, whichever region it came through.
"""

from __future__ import annotations

import math
import time

from aiohttp import web

from streamer.http.errors import ApiError


class WriteLimits:
    def __init__(self, per_minute: int, max_bytes: int) -> None:
        self.per_minute = per_minute
        self.max_bytes = max_bytes
        self._buckets: dict[str, tuple[float, float]] = {}  # user id -> (tokens, when counted)
        self.refused = 0

    def take(self, user_id: str, now: float | None = None) -> float:
        """Take one write from the user's bucket: 0 when allowed, else the seconds until it is."""
        now = time.monotonic() if now is None else now
        rate = self.per_minute / 60
        tokens, then = self._buckets.get(user_id, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - then) * rate)
        if tokens < 1:
            self._buckets[user_id] = (tokens, now)
            return (1 - tokens) / rate
        self._buckets[user_id] = (tokens - 1, now)
        return 0.0

    async def check(self, request: web.Request, user_id: str) -> None:
        """Raise 413 or 429 unless this user may make this write (a JSON body, read already) now."""
        size = len(await request.read()) if request.body_exists else 0
        if size > self.max_bytes:
            self.refused += 1
            raise ApiError(413, "payload_too_large", f"a write is limited to {self.max_bytes // 1024} KiB "
                           "(write_max_kb)")
        self.check_rate(user_id)

    def check_rate(self, user_id: str) -> None:
        wait = self.take(user_id)
        if wait:
            self.refused += 1
            raise ApiError(429, "too_many_writes", f"at most {self.per_minute} writes a minute per user "
                           "(writes_per_minute); try again shortly", {"Retry-After": str(math.ceil(wait))})

