"""Plays on their way from a region to the master, in batches.

Players post plays often, in many small requests. A region does not forward each one: the plays
that arrive while a batch is on its way to the master wait and go together in the next one
(`POST /cluster/v1/plays`, with the cluster secret), so under load one request carries many, and
when nothing is in flight a play goes at once (no timer to wait for). Each client request stays
its own write at the master, with its user, its idempotency key and the ids the region handed
out, in its own savepoint: a bad track id fails that request only. When the master cannot be
reached, the requests of the batch go to the outbox, like any write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp

from streamer.http.auth import SECRET_HEADER

TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=5)
MAX_PLAYS = 5000  # plays per batch: about 0.6 MB of JSON, under the master's 1 MiB body limit


class MasterUnreachable(Exception):
    """The batch could not be delivered; its requests go to the outbox."""


class PlayBatches:
    def __init__(self, session: aiohttp.ClientSession, master_url: Callable[[], str], secret: str) -> None:
        self._session = session
        self._master_url = master_url  # raises ClientConnectionError once nothing may be forwarded
        self._secret = secret
        self._waiting: list[tuple[dict[str, Any], asyncio.Future]] = []
        self._sender: asyncio.Task | None = None
        self.batches = 0  # requests to the master

    async def send(self, entry: dict[str, Any]) -> tuple[int, Any, int]:
        """Deliver one request's plays ({user_id, key, plays, ids}): the master's (status, answer,
        change sequence after it). Raises MasterUnreachable."""
        done = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, should the client go
        self._waiting.append((entry, done))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all(), name="send-plays")
        return await asyncio.shield(done)  # a client gone does not take its plays out of a batch

    async def _send_all(self) -> None:
        batch: list[tuple[dict[str, Any], asyncio.Future]] = []
        try:
            while self._waiting:
                batch, self._waiting = _first_batch(self._waiting)
                try:
                    results, sequence = await self._post([entry for entry, _ in batch])
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError) as exc:
                    for _, done in batch:
                        done.set_exception(MasterUnreachable(str(exc) or type(exc).__name__))
                    continue
                self.batches += 1
                for (_, done), result in zip(batch, results, strict=True):
                    done.set_result((result["status"], result["body"], sequence))
                batch = []
        except BaseException:
            for _, done in [*batch, *self._waiting]:
                if not done.done():
                    done.set_exception(MasterUnreachable("the region is stopping"))
            self._waiting = []
            raise
        finally:
            self._sender = None

    async def _post(self, entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        async with self._session.post(f"{self._master_url()}/cluster/v1/plays", json={"entries": entries},
                                      headers={SECRET_HEADER: self._secret}, timeout=TIMEOUT) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, resp.history, status=resp.status,
                                                  message=f"master answered {resp.status}")
            body = await resp.json()
        if len(body["results"]) != len(entries):
            raise ValueError("the master answered for a different number of requests")
        return body["results"], int(body["sequence"])

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender


def _first_batch(waiting: list) -> tuple[list, list]:
    """The waiting requests that go in the next batch (at least one), and the rest."""
    plays = 0
    for i, (entry, _) in enumerate(waiting):
        plays += len(entry["plays"])
        if plays > MAX_PLAYS and i > 0:
            return waiting[:i], waiting[i:]
    return waiting, []
