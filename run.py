"""Entry point: `python run.py [serve|scan|config|user|backup|cluster|promote|follow] [--flags]`.
All logic lives in streamer.cli; this file only turns a wrong interpreter into one clear line."""

import sys

OURS = ("streamer", "media", "config")
HOW = ("use the project's venv: .venv/bin/python run.py (or . .venv/bin/activate first), "
       "made once with: python3 -m venv .venv && .venv/bin/pip install -e .")

if sys.version_info < (3, 11):
    sys.exit(f"error: run.py needs Python 3.11 or newer; {sys.executable} is {sys.version.split()[0]}")
try:
    from streamer.cli import main
except ModuleNotFoundError as exc:
    if (exc.name or "").split(".")[0] in OURS:
        raise  # a fault of this program, not of the environment: keep the traceback
    sys.exit(f"error: {sys.executable} has no {exc.name!r}: {HOW}")

if __name__ == "__main__":
    sys.exit(main())
