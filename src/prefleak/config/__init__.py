"""prefleak's one settings object: defaults, then a YAML file, then ``PREFLEAK_*`` variables."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "prefleak.db"


def default_db() -> Path:
    """The database a command uses when given no ``--db``: ``$PREFLEAK_DB``, else ./prefleak.db."""
    return Path(os.environ.get("PREFLEAK_DB") or DEFAULT_DB)
