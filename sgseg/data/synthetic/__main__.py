"""``python -m sgseg.data.synthetic``: see :mod:`sgseg.data.synthetic.cli`."""

from sgseg.data.synthetic.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
