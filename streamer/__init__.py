"""The aiohttp node: http/ (what every door shares), delivery/ (bytes to players), api/ (JSON API),
web/ (the page), cluster/ (roles, master and regions); app.py composes them, cli.py starts them."""

from streamer.app import VERSION, create_app

__all__ = ["VERSION", "create_app"]
