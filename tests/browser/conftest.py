"""The tests that drive a real headless Chromium against a real server process: each carries
the markers ``browser`` and ``slow``, given here by folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support import browser as chromium

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """A real headless Chromium (tests/support/browser.py). Fails, never skips, where it is missing:
    CI must run the browser tests."""
    reason = chromium.missing()
    if reason:
        pytest.fail(reason)
    with chromium.chromium() as driver:
        yield driver
