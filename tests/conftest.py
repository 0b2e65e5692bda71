"""Shared pytest configuration: hypothesis profiles and the ``--long`` option.

Profiles:

* ``ci``: derandomized (the same examples on every run), ~100 examples, no
  deadline, failure blobs printed; chosen when the ``CI`` environment
  variable is set.
* ``dev``: the default on a workstation; random examples, otherwise as ``ci``.
* ``long``: many examples, for a soak run; chosen by ``pytest --long``.

An explicit ``--hypothesis-profile`` still wins over this choice.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])

settings.register_profile("ci", derandomize=True, max_examples=100, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("dev", max_examples=100, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=2000, **_COMMON)  # type: ignore[arg-type]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--long``: run the property tests with the ``long`` hypothesis profile."""
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run hypothesis tests with many examples (the 'long' profile) and the long kill -9 series",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Load the hypothesis profile: ``--long``, else ``ci`` under CI, else ``dev``."""
    if config.getoption("--hypothesis-profile", default=None):
        return  # chosen explicitly on the command line
    if config.getoption("--long"):
        settings.load_profile("long")
    elif os.environ.get("CI"):
        settings.load_profile("ci")
    else:
        settings.load_profile("dev")


# the session-wide SeaweedFS S3 server of the object-store tests (tests/seaweedfs_server.py)
from seaweedfs_server import seaweedfs  # noqa: E402, F401
