"""A real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium.

``make test`` installs both packages. Each browser gets its own empty profile, so two
browsers are two devices: separate cookies, separate sessions.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Flags the machine's closed network needs (no background calls home), plus headless basics.
_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
)


def missing() -> str | None:
    """Why no browser can start here, or None. (``make test`` installs it.)"""
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            return f"{path} is not installed (make test installs chromium and chromium-driver)"
    return None


@contextmanager
def chromium(user_agent: str | None = None) -> Iterator[WebDriver]:
    """A fresh headless Chromium; ``user_agent`` makes it look like another device."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in _FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if user_agent:
        options.add_argument(f"--user-agent={user_agent}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: WebDriver, css: str, timeout: float = 10):
    """The element matching ``css`` once it is present."""
    return WebDriverWait(driver, timeout).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def fill(driver: WebDriver, fields: dict[str, str]) -> None:
    """Type into inputs by their ``name``."""
    for name, value in fields.items():
        element = driver.find_element(By.NAME, name)
        element.clear()
        element.send_keys(value)


def click_through(driver: WebDriver, element, timeout: float = 15) -> None:
    """Click something that loads a new page and wait until the old one is gone, so that
    what is read next is the new page (an element both pages have would match at once)."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    # While the old document is torn down ChromeDriver may answer "Node with given id does
    # not belong to the document" instead of "stale element": ask again until it is stale.
    WebDriverWait(driver, timeout, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.staleness_of(page))
