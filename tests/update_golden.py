"""Rewrite tests/golden/ from tests/golden_cases.py: python -m tests.update_golden"""

from __future__ import annotations

import shutil

from tests.golden_cases import GOLDEN, cases


def main() -> None:
    shutil.rmtree(GOLDEN, ignore_errors=True)
    for case, files in cases().items():
        folder = GOLDEN / case
        folder.mkdir(parents=True)
        for name, text in files.items():
            (folder / name).write_text(text)
        print(f"wrote {folder} ({len(files)} files)")


if __name__ == "__main__":
    main()
