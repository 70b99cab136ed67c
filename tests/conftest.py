from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The project's shared/ folder: beside the repository, or where PYMESH_SHARED says."""
    candidate = Path(os.environ.get("PYMESH_SHARED", ROOT.parent / "shared"))
    if not (candidate / "conformance").is_dir():
        raise RuntimeError(f"shared/conformance not found at {candidate}; set PYMESH_SHARED")
    return candidate


@pytest.fixture(scope="session")
def conformance() -> Path:
    return shared_dir() / "conformance"
