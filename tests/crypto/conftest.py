"""Fixtures of the encryption tests: the age CLI built by scripts/testbed.py."""

from __future__ import annotations

import pytest
import testbed  # scripts/testbed.py, loaded by tests/conftest.py
from age_cli import AgeCli


@pytest.fixture(scope="session")
def age_cli() -> AgeCli:
    """Fails (never skips) when the binaries are missing: run scripts/testbed.py build."""
    directory = testbed.bin_dir()
    missing = [t.name for t in testbed.AGE_TOOLS if not testbed.is_built(t, directory)]
    if missing:
        pytest.fail(f"missing {', '.join(missing)} in {directory}: run scripts/testbed.py build")
    return AgeCli(directory)
