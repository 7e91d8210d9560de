"""A role changed while the node ran, kept across restarts: `node.json` in the data folder.

A region can be promoted to master (`run.py promote`) or pointed at another master (`run.py
follow URL`). Either change is kept in `node.json`, beside (not in) the catalog, which a snapshot
replaces, so a restart keeps it even while the config file still says otherwise; the node says so
in its log. A promoted node does not scan its library (a region's library may lack files its
catalog lists, and a scan would remove those tracks everywhere) until the operator removes
`node.json`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from media import MediaError

log = logging.getLogger(__name__)


class SavedRole:
    def __init__(self, data_dir: Path) -> None:
        self._file = data_dir / "node.json"
        try:
            self._state = json.loads(self._file.read_text(encoding="utf-8")) if self._file.exists() else {}
        except (OSError, ValueError) as exc:
            raise MediaError(f"{self._file} cannot be read ({exc}): fix or remove it") from None

    @property
    def promoted_at(self) -> str | None:
        """When this node was promoted to master, if it was."""
        return self._state.get("promoted_at") if self._state.get("role") == "master" else None

    def master_url(self, configured: str, trusted: tuple[str, ...]) -> str:
        """The master a region follows: the one it was told to follow at runtime, if it trusts it."""
        saved = self._state.get("master_url")
        if not saved or saved == configured:
            return configured
        if saved not in trusted:
            log.error("%s says to follow %s, which is not among this node's cluster_nodes: following %s, as "
                      "configured", self._file, saved, configured)
            return configured
        log.warning("this region follows %s, as it was told to at runtime (its config says %s; remove %s to go "
                    "back to the config)", saved, configured, self._file)
        return saved

    def warn_promoted(self) -> None:
        log.warning("this node was promoted to master at %s: it serves as the master, whatever its config says, "
                    "and does not scan its library, which may lack files the catalog lists (a scan would remove "
                    "them everywhere). Once the library holds them all, set role = \"master\" in its config and "
                    "remove %s", self.promoted_at, self._file)

    def promoted(self) -> str:
        """Record the promotion (first, then it is in effect: a failed write leaves the node the
        region it was); its time."""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._save({"role": "master", "promoted_at": at})
        return at

    def follow(self, master_url: str) -> None:
        self._save({"role": "region", "master_url": master_url})

    def _save(self, state: dict) -> None:
        partial = self._file.with_suffix(f".{os.getpid()}.{time.monotonic_ns()}.partial")
        partial.write_text(json.dumps(state), encoding="utf-8")
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        partial.replace(self._file)
        self._state = state
