"""The browse page's tests share one headless Chromium (Debian's, driven by Playwright; no
browser is downloaded)."""

from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    sync = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not here (apt-get install chromium)")
    with sync.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--autoplay-policy=no-user-gesture-required", "--allow-file-access-from-files"])
        yield chromium
        chromium.close()
