"""`python -m gobtfgen` and the `gobtfgen` console script.

The CLI is imported inside the handler: a Ctrl-C while Python is still importing gobtfgen's
modules ends with the same one-line message and exit 130 as one during the run."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from gobtfgen.cli import main as cli_main
    except KeyboardInterrupt:
        print("gobtfgen: interrupted; outputs left as they were", file=sys.stderr)
        return 130
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
