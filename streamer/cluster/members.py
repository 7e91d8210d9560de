"""The nodes of a cluster as this node knows them, with no configuration beyond `master_url`.

A follower names itself in every change-feed poll (`X-Node-URL`: its `cluster_url`), and the
`since` of that poll says what its replica holds: everything up to that sequence. So the master
knows its followers, how far each has replicated (what `sync_replicas` waits on: no extra round
trip) and which are polling now. It publishes that list with every change-feed answer and at
`GET /cluster/v1/nodes`; followers keep it in `peers.json` beside the catalog, so a region still
knows the other nodes after its master is gone (a pull then asks them, streamer.cluster.pulls).

A node trusts only the nodes its configuration names (`cluster_nodes`, and its `master_url`): it
lists whoever polls, but pulls from, follows and sends the cluster secret to those alone. Node
to node traffic may be https, verified with `cluster_ca_file` (a private CA) or the system's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)

NODE_HEADER = "X-Node-URL"
SILENT_AFTER = 60.0  # seconds without a poll after which a follower counts as unreachable


@dataclass
class FollowerState:
    acked: int = 0  # the follower holds every change up to this sequence
    last_seen: float = 0.0  # time.time() of its last poll
    polling: int = 0  # its long polls open now
    heard: int = 0  # the joins (Members.joins) its last answer told it of


class Members:
    def __init__(self, itself: str, data_dir: Path, trusted: tuple[str, ...] = ()) -> None:
        self.itself = itself  # the URL other nodes reach this node at
        self.trusted = frozenset(url.rstrip("/") for url in trusted)  # cluster_nodes and master_url
        self.followers: dict[str, FollowerState] = {}  # as a master: who polls this node
        self.peers: dict[str, dict] = {}  # as a follower: the nodes its master listed
        self._file = data_dir / "peers.json"
        self._acked = asyncio.Event()  # set (and replaced) whenever a follower acknowledges more
        self.joined = asyncio.Event()  # set (and replaced) when a follower appears: polls answer with the news
        self.joins = 0  # followers that appeared: a poll of one told fewer is answered at once
        with contextlib.suppress(OSError, ValueError, TypeError):
            saved = json.loads(self._file.read_text(encoding="utf-8"))
            self.peers = {url: node for url, node in saved.items() if isinstance(node, dict)}

    # --- as a master -----------------------------------------------------------------------------

    def poll_started(self, url: str, holds: int) -> FollowerState:
        """A follower at `url` polls, holding every change up to `holds`."""
        state = self.followers.setdefault(url, FollowerState())
        if state.last_seen == 0.0:
            log.info("cluster: %s follows this node (at sequence %d)", url, holds)
            self.joins += 1
            self.joined.set()
            self.joined = asyncio.Event()
        state.acked, state.last_seen = holds, time.time()
        state.polling += 1
        self._acked.set()
        self._acked = asyncio.Event()
        return state

    def poll_ended(self, state: FollowerState) -> None:
        state.polling -= 1
        state.last_seen = time.time()

    def holding(self, sequence: int) -> int:
        """How many followers hold `sequence`."""
        return sum(1 for state in self.followers.values() if state.acked >= sequence)

    async def replicated(self, sequence: int, replicas: int, timeout: float) -> bool:
        """Wait until `replicas` followers hold `sequence` (True), or `timeout` seconds (False)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.holding(sequence) < replicas:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), left)
        return True

    def listing(self, role: str) -> list[dict]:
        """This node and its followers, each with its URL, role, reachability and sequence held."""
        now = time.time()
        nodes = [{"url": self.itself, "role": role, "reachable": True}]
        for url, state in sorted(self.followers.items()):
            nodes.append({"url": url, "role": "region", "sequence": state.acked,
                          "reachable": state.polling > 0 or now - state.last_seen < SILENT_AFTER,
                          "last_seen": round(state.last_seen, 3)})
        return nodes

    # --- as a follower ---------------------------------------------------------------------------

    def learn(self, nodes: list) -> None:
        """The list the master published: kept (on disk too) when it names a node not known yet."""
        known = {node["url"]: {"role": node.get("role"), "reachable": bool(node.get("reachable"))}
                 for node in nodes if isinstance(node, dict) and isinstance(node.get("url"), str)
                 and node["url"] != self.itself}
        if not known:
            return
        added = set(known) - set(self.peers)
        self.peers.update(known)
        if added:
            log.info("cluster: peers known now: %s", ", ".join(sorted(self.peers)))
            self._save()

    def sources(self, master_url: str | None) -> list[str]:
        """Where a file this node lacks may be: its master first, then the other nodes it knows and
        trusts, the reachable ones first."""
        others = {url: node for url, node in self.peers.items()
                  if url not in (self.itself, master_url) and url in self.trusted}
        for url, state in self.followers.items():
            if url in self.trusted and url != self.itself:
                others.setdefault(url, {"reachable": state.polling > 0})
        ordered = sorted(others, key=lambda url: not others[url].get("reachable"))
        return ([master_url] if master_url else []) + ordered

    def _save(self) -> None:
        partial = self._file.with_suffix(f".{os.getpid()}.partial")
        try:
            partial.write_text(json.dumps(self.peers), encoding="utf-8")
            partial.replace(self._file)
        except OSError as exc:
            log.warning("cluster: could not keep the peer list in %s: %s", self._file, exc)


def connector(ca_file: Path | None, limit: int = 100) -> aiohttp.TCPConnector:
    """A connector for requests to other nodes: https verified against `ca_file` when set."""
    verify = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
    return aiohttp.TCPConnector(ssl=verify, limit=limit)


def node_url(host: str, port: int) -> str:
    """A URL this node reaches itself at, from the address it listens on."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
