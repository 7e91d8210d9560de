"""The aiohttp application: routes, HTTP semantics and (later) cluster roles."""

from streamer.app import VERSION, create_app

__all__ = ["VERSION", "create_app"]
