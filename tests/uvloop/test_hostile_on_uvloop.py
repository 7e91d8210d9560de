"""tests/test_hostile.py, run on uvloop (see conftest.py): abusive clients, stalls, ranges."""

from tests.test_hostile import *  # noqa: F401, F403 (each test, its module-scoped loop and fixtures)
