"""Shared test setup: the `shared` marker, which skips a test (with the reason) when the
../shared data it reads is absent. Paths and helpers live in paths.py and runtime_helpers.py.

    @pytest.mark.shared("data/fer2013/train", "reference/pico/facefinder")
    def test_...(): ...

    pytestmark = pytest.mark.shared("data/fer2013/train")   # a whole module
"""

from __future__ import annotations

import pytest
from paths import missing_reason


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shared(*rels): needs these paths under ../shared (or $EDGE_FER_SHARED); "
        "skips with the reason when one is absent",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a skip mark (not a skip in setup): -rs then names the test, not this file
    for item in items:
        rels = [rel for mark in item.iter_markers("shared") for rel in mark.args]
        reason = missing_reason(*rels) if rels else None
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))
