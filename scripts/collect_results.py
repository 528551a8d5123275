"""Kept for old commands: the tables are ``python -m sgseg.results`` (:mod:`sgseg.results`) now."""

import sys

from sgseg.results import main

if __name__ == "__main__":
    sys.exit(main())
