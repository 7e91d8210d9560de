"""tests/test_transcodes.py, run on uvloop (see conftest.py): ffmpeg children under libuv's watcher."""

from tests.test_transcodes import *  # noqa: F401, F403 (each test and the fixtures it uses)
