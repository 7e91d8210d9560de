"""The structure docs/architecture.md describes, held to the code: which room of streamer/ may
import which, roles asked rather than tested, and functions a reader can hold in their head."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What each package of streamer/ may import of streamer/ (besides itself).
MAY_IMPORT = {"http": set(), "delivery": {"http"}, "web": {"http"}, "api": {"http", "delivery"},
              "subsonic": {"http", "delivery", "api"}, "cluster": {"http", "delivery", "api"}}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_each_room_imports_only_the_rooms_below_it():
    wrong = []
    for package, allowed in MAY_IMPORT.items():
        for path in (ROOT / "streamer" / package).glob("*.py"):
            for module in _imports(path):
                parts = module.split(".")
                if parts[0] == "streamer" and (len(parts) < 2 or parts[1] not in allowed | {package}):
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_media_never_imports_streamer_or_aiohttp():
    wrong = [f"{path.relative_to(ROOT)} imports {module}" for path in (ROOT / "media").glob("*.py")
             for module in _imports(path) if module.split(".")[0] in ("streamer", "aiohttp")]
    assert not wrong, "\n".join(wrong)


def test_the_role_is_asked_not_tested_outside_the_roles_and_the_cli():
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in (ROOT / "streamer").rglob("*.py") if path.name not in ("roles.py", "cli.py")
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"role\s*[!=]=|role\.name\s*[!=]=", line)]
    assert not found, "\n".join(found)


def test_no_function_passes_40_lines_outside_the_demo_synthesis():
    long = []
    for folder in ("streamer", "media", "config", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "demo.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 40:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert not long, "\n".join(long)
