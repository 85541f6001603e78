"""The archive a benchmark runs over when none is given: the btfhub sample next to a development
checkout (../shared/btfhub-sample), else the tests' Debian kernel corpus (fetched by
scripts/setup), so every benchmark also runs in a fresh clone."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "btfhub-sample"


def default_archive() -> Path:
    """The sample, else the corpus archive; exits with what to run when neither is here."""
    if SAMPLE.is_dir():
        return SAMPLE
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests import corpus

    try:
        return corpus.build_archive()
    except corpus.CorpusError as exc:
        sys.exit(f"no btfhub sample ({SAMPLE}) and no kernel corpus ({exc}): run scripts/setup "
                 "or pass --archive DIR")
