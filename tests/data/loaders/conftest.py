"""Shared helpers for the loader tests: where the real datasets live (``../shared/data``)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = (Path(__file__).resolve().parents[3] / ".." / "shared" / "data").resolve()


def shared_folder(name: str) -> Path:
    """``../shared/data/<name>``, or skip the test when it is not there."""
    d = SHARED / name
    if not d.is_dir():
        pytest.skip(f"../shared/data/{name} not present (real dataset; see shared/data/README.md)")
    return d


@pytest.fixture
def los_loop() -> Path:
    return shared_folder("los_loop")


@pytest.fixture
def hcmc() -> Path:
    return shared_folder("hcmc")


@pytest.fixture
def i94() -> Path:
    return shared_folder("metro_interstate_i94")


@pytest.fixture
def montevideo_bus() -> Path:
    return shared_folder("montevideo_bus")
