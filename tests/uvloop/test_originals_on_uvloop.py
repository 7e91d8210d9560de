"""tests/test_originals.py and tests/test_slow_readers.py, run on uvloop (see conftest.py)."""

from tests.test_originals import *  # noqa: F401, F403 (each test, and the fixtures they use)
from tests.test_slow_readers import *  # noqa: F401, F403
