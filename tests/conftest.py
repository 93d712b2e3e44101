"""Fixtures shared by several test files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import TansuBroker


@pytest.fixture
def tansu_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    """A fresh local Kafka broker per test (it starts in ~50 ms); log in ``tmp_path/tansu.log``."""
    with TansuBroker(log_path=tmp_path / "tansu.log") as broker:
        yield broker
