"""(being written: issue 13)"""

from __future__ import annotations

from streamer.http.edge import Routes


def add(routes: Routes) -> None:
    """Registers nothing yet."""
