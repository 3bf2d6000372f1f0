"""A real headless browser for the page tests (Debian's chromium and chromedriver, which
.ci/run installs). Without one the tests skip with one line, so that the README's test
command passes on a fresh machine; CI sets TINYGRAD_MNIST_REQUIRE_BROWSER=1, which makes a
missing browser a failure there."""
import json
import os
import shutil

import pytest

REQUIRED = os.environ.get("TINYGRAD_MNIST_REQUIRE_BROWSER") == "1"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
MISSING = ("the browser tests need Debian's chromium and chromium-driver (apt-get install "
           "chromium chromium-driver; .ci/run does it) and selenium (pip install -e \".[dev]\")")
try:
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains  # noqa: F401
    from selenium.webdriver.common.by import By  # noqa: F401
except ImportError:
    webdriver = None


def require_browser():
    """Skip the calling test module (or fail it, under CI) where no browser exists."""
    if webdriver is None or not (CHROMIUM and DRIVER):
        if REQUIRED:
            pytest.fail(MISSING, pytrace=False)
        pytest.skip(MISSING, allow_module_level=True)


def start_browser(size="1400,1000"):
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={size}"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)


def open_page(browser, path):
    browser.get_log("performance")                       # forget earlier pages
    browser.get(path.resolve().as_uri())
    return browser


def requests_and_errors(browser):
    """The URLs the page asked for, and the script errors it logged."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    return urls, errors
