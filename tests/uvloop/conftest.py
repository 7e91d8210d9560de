"""The tests of this folder run on uvloop, the event loop `run.py serve` runs on with
event_loop = "uvloop"; every other test runs on Python's own asyncio loop, the default.

pytest-asyncio asks this hook, for the tests under this folder only, which loops to run them on.
"""

from __future__ import annotations

import uvloop


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}
