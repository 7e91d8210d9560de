"""A node's role as the doors see it: what differs between a standalone node, a master and a region.

The roles themselves (streamer.cluster.roles) are subclasses of `Role`; the app holds the current
one in `Node`, and a promotion replaces a Region by a Master there while the server runs. The doors
never ask which role it is: they ask the role what they need (its routes and background work, how
a write is taken, its health, whether it is ready, its gauges, and where bytes come from that the
library does not hold).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from media.growing import GrowingFile
from streamer.http.edge import Handler, Routes, Write

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


class Role:
    """A standalone node: the library is all there is, and every write is taken here."""

    name = "standalone"
    promoted_at: str | None = None

    @property
    def may_scan(self) -> bool:
        """A node promoted from a region does not scan: its library may lack files its catalog lists."""
        return self.promoted_at is None

    def add_routes(self, routes: Routes) -> None:
        """The role's own routes (the cluster's, for a master or a region)."""

    def contexts(self) -> list[CleanupContext]:
        """Its background work, started and stopped with the app (aiohttp cleanup contexts)."""
        return []

    async def take_write(self, request: web.Request, handler: Handler, write: Write) -> web.StreamResponse:
        return await handler(request)

    def health(self) -> dict[str, Any]:
        """What /healthz adds for the operator."""
        return {}

    def not_ready(self) -> str | None:
        """Why the node cannot serve reads yet (/readyz answers 503), or None."""
        return None

    async def gauges(self) -> dict[str, tuple[str, float]]:
        """What /metrics adds: name -> (help, value)."""
        return {}

    async def elsewhere(self, track_id: str, track: dict, arriving: bool) -> str | GrowingFile:
        """The bytes of a track whose file the library does not hold (its path lacks the catalog's
        size or fingerprint): a path, or with `arriving` a file still on its way. A node that
        only has its library has them nowhere else."""
        raise LookupError(track_id)

    async def cover_elsewhere(self, where: tuple[str, str]) -> bytes | None:
        """A cover picture the library lacks (("folder" | "embedded", path)), from elsewhere; a
        node that only has its library has none."""
        return None

    @property
    def pulls_media(self) -> bool:
        """Whether `elsewhere` may find bytes: only then is a track's file checked against the
        catalog before it is opened."""
        return False


class Node:
    """The node's current role; a promotion replaces it while the app runs."""

    def __init__(self, role: Role) -> None:
        self.role = role
