"""Single entry point: `python main.py --help` lists every command."""

import sys

from cli import main

if __name__ == "__main__":
    sys.exit(main())
