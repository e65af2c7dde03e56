"""The report's HTML page in a real headless Chromium (Selenium): the per-server table filters and sorts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from common.reasons import Reason
from fleet.campaign.machine import MemberEvent, Why
from fleet.campaign.spec import CampaignSpec
from fleet.report import build_report, write_report
from tests.unit.test_campaign import NOW, fleet

pytestmark = [pytest.mark.integration]
CHROMEDRIVER = Path("/usr/bin/chromedriver")  # Debian's chromium-driver: nothing is downloaded
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def _missing(why: str) -> None:
    """Fail in CI (the browser must be there), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI installs chromium and chromium-driver: .ci/run)")
    pytest.skip(why)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium driven by Debian's chromedriver, with its own profile folder."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (the test extras)")
    if shutil.which("chromium") is None or not CHROMEDRIVER.exists():
        _missing("chromium or chromium-driver is not installed")
    options = webdriver.ChromeOptions()
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def report_page(folder: Path) -> Path:
    """A report of 12 servers: 3 rejected (SWM-1), 2 failed, the rest succeeded."""
    campaign = fleet(12, CampaignSpec(campaign_id="browser", canary=2))
    for i, member in enumerate(campaign.members.values()):
        member.step(MemberEvent.START)
        when = NOW + timedelta(minutes=i)
        if i < 3:
            why = Why(Reason.MAINTENANCE_KEY_REQUIRED.value, "SWM-1", "no key")
            campaign.record(member.serial, MemberEvent.REJECTED, when, why)
        elif i < 5:
            why = Why(Reason.IMAGE_DIGEST_MISMATCH.value, "IMG-1", "bad image")
            campaign.record(member.serial, MemberEvent.FAILED, when, why)
        else:
            member.steps.append((campaign.seconds(when), "8.3"))
            campaign.record(member.serial, MemberEvent.SUCCEEDED, when)
    _, html = write_report(build_report(campaign), folder)
    return html


def visible_outcomes(driver: Any) -> list[str]:
    """The outcome column of the per-server rows shown."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#servers tbody tr")
    return [r.get_attribute("data-outcome") for r in rows if r.is_displayed()]


def test_filter_shows_only_the_chosen_outcome(browser: Any, tmp_path: Path) -> None:
    """Choosing 'rejected' in the outcome filter leaves exactly the rejected servers visible."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(report_page(tmp_path / "report").as_uri())
    assert len(visible_outcomes(browser)) == 12
    Select(browser.find_element(By.ID, "filter-outcome")).select_by_value("rejected")
    assert visible_outcomes(browser) == ["rejected"] * 3
    assert browser.find_element(By.ID, "shown").text == "3"
    browser.save_screenshot(str(tmp_path / "report-filtered.png"))
    assert (tmp_path / "report-filtered.png").stat().st_size > 0


def test_heading_click_sorts_the_rows(browser: Any, tmp_path: Path) -> None:
    """A click on the outcome heading sorts the rows by outcome."""
    from selenium.webdriver.common.by import By

    browser.get(report_page(tmp_path / "report").as_uri())
    browser.find_elements(By.CSS_SELECTOR, "#servers thead th")[7].click()
    shown = visible_outcomes(browser)
    assert shown == sorted(shown)
    assert shown[0] == "failed"


def test_timeline_marks_failures_and_refusals(browser: Any, tmp_path: Path) -> None:
    """The timeline draws one mark per failure and refusal and labels its time axis."""
    from selenium.webdriver.common.by import By

    browser.get(report_page(tmp_path / "report").as_uri())
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg .mark.failed")) == 2
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg .mark.rejected")) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg .xtick")) == 6
