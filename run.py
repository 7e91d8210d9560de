"""Entry point: `python run.py [serve|scan|config] [--flags]`. All logic lives in streamer.cli."""

import sys

from streamer.cli import main

if __name__ == "__main__":
    sys.exit(main())
