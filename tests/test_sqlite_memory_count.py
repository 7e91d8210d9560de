"""media.database.skip_memory_statistics: SQLite's count of its memory (a process-wide mutex at
every allocation) is turned off when nothing of SQLite's is in use yet, and left alone otherwise.
Each case runs in a fresh interpreter: the setting is the whole process's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CASE = """
import _sqlite3, ctypes, json, sqlite3, sys
from media.database import Database, skip_memory_statistics
lib = ctypes.CDLL(_sqlite3.__file__)
lib.sqlite3_memory_used.restype = ctypes.c_int64
early = sqlite3.connect(":memory:") if sys.argv[1] == "open first" else None
first = skip_memory_statistics()
db = Database(sys.argv[2])
db.write_sync(lambda d: d.execute("CREATE TABLE t (n INTEGER)"))
db.write_sync(lambda d: d.conn.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(1000)]))
total = db.read_sync(lambda d: d.execute("SELECT sum(n) FROM t").fetchone()[0])
print(json.dumps({"turned_off": first, "again": skip_memory_statistics(), "sum": total,
                  "counted": lib.sqlite3_memory_used()}))
db.close()
"""


def _case(tmp_path: Path, how: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CASE, how, str(tmp_path / "t.db")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_turned_off_before_any_connection_and_sqlite_works_after(tmp_path):
    found = _case(tmp_path, "fresh")
    assert found == {"turned_off": True, "again": True, "sum": 499500, "counted": 0}


def test_left_on_when_a_connection_is_open(tmp_path):
    found = _case(tmp_path, "open first")
    assert found["turned_off"] is False and found["again"] is False
    assert found["sum"] == 499500 and found["counted"] > 0  # still counted, nothing shut down
