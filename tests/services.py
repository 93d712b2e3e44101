"""Helpers for tests that run real programs: finding them, and waiting for them to get somewhere."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

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


def wait_for(
    check: Callable[[], Any], timeout: float = 15.0, what: str = "condition", every: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy (and return that), or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
