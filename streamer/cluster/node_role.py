"""What this node is now: the role from its settings, until an operator changes it at runtime.

A region can be promoted to master (`run.py promote`) or pointed at another master (`run.py
follow URL`). Either change is kept in `node.json` in the data folder, beside (not in) the
catalog, which a snapshot replaces, so a restart keeps it even while the config file still says
otherwise; the node says so in its log. A promoted node does not scan its library (a region's
library may lack files its catalog lists, and a scan would remove those tracks everywhere) until
the operator removes `node.json`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from media import MediaError

log = logging.getLogger(__name__)


class NodeRole:
    def __init__(self, configured: str, master_url: str, data_dir: Path, trusted: tuple[str, ...] = ()) -> None:
        self.name = configured  # standalone, master or region
        self.master_url = master_url  # a region's master
        self.promoted_at: str | None = None
        self.promoting = False  # a region on its way to master: its outbox is being applied
        self.changing = asyncio.Lock()  # one promotion or change of master at a time
        self._file = data_dir / "node.json"
        try:
            saved = json.loads(self._file.read_text(encoding="utf-8")) if self._file.exists() else {}
        except (OSError, ValueError) as exc:
            raise MediaError(f"{self._file} cannot be read ({exc}): fix or remove it") from None
        if saved.get("role") == "master" and configured in ("region", "master"):
            self.name, self.promoted_at = "master", saved.get("promoted_at")
            log.warning("this node was promoted to master at %s: it serves as the master, whatever its config "
                        "says, and does not scan its library, which may lack files the catalog lists (a scan "
                        "would remove them everywhere). Once the library holds them all, set role = \"master\" "
                        "in its config and remove %s", self.promoted_at, self._file)
        elif configured == "region" and saved.get("master_url") and saved["master_url"] not in trusted:
            log.error("%s says to follow %s, which is not among this node's cluster_nodes: following %s, as "
                      "configured", self._file, saved["master_url"], master_url)
        elif configured == "region" and saved.get("master_url") and saved["master_url"] != master_url:
            self.master_url = saved["master_url"]
            log.warning("this region follows %s, as it was told to at runtime (its config says %s; "
                        "remove %s to go back to the config)", self.master_url, master_url, self._file)

    @property
    def is_master(self) -> bool:
        return self.name == "master"

    @property
    def may_scan(self) -> bool:
        return self.promoted_at is None

    def promoted(self) -> None:
        """Recorded first, then in effect: a failed write leaves the node the region it was."""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._save({"role": "master", "promoted_at": at})
        self.name, self.promoted_at = "master", at

    def follow(self, master_url: str) -> None:
        self._save({"role": "region", "master_url": master_url})
        self.master_url = master_url

    def _save(self, state: dict) -> None:
        partial = self._file.with_suffix(f".{os.getpid()}.{time.monotonic_ns()}.partial")
        partial.write_text(json.dumps(state), encoding="utf-8")
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        partial.replace(self._file)
