"""Shared test fixtures. Real data lives in ../shared/data (never copied into the repository);
the tests fail, not skip, when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WILDREID_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(
            f"real test data not found at {SHARED_DATA}: the tests need ../shared/data "
            "(or WILDREID_SHARED_DATA pointing at it)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def lite0_backbone():
    """The offline EfficientNet-Lite0 descriptor, loaded once for the whole session."""
    from wildreid.backbones import load_backbone

    return load_backbone("efficientnet-lite0")


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"
