"""External programs the tests use: found, skipped, or failed when CI says they must be there."""

from __future__ import annotations

import os
import shutil

import pytest


def require_binary(name: str, install_hint: str) -> str:
    """Path of an external program a test needs (promtool, prometheus, ...).

    Skips the test when the program is missing, unless PREFLEAK_REQUIRE_SERVICES=1 (set by
    .ci/run), where a missing program is a failed install and fails the test.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} not installed ({install_hint})"
    if os.environ.get("PREFLEAK_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)
