"""Where the official parity fixtures are: the vendored copy in tests/fixtures/official, or $MMGT_FIXTURES."""

from __future__ import annotations

import os
from pathlib import Path

VENDORED_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official"
OFFICIAL_FIXTURES = Path(os.environ.get("MMGT_FIXTURES", VENDORED_FIXTURES))
