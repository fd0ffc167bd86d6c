"""Checks of a built results site (``xfr.site``) in a real browser: headless Debian Chromium
driven by selenium (no browser download; ``scripts/setup.sh`` installs chromium and
chromium-driver). Used on the committed site (tests/test_site.py) and on the smoke-built one
(tests/test_pipeline.py).

Set ``XFR_SCREENSHOTS=DIR`` to keep the screenshots (landing page, explorer with an item
selected) in DIR."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

CHROMIUM = os.environ.get("XFR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("XFR_CHROMEDRIVER", "/usr/bin/chromedriver")


def chromium_driver():
    """A headless Chromium webdriver, or a pytest skip saying what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not (Path(exe).is_file() or shutil.which(exe)):
            pytest.skip(f"{exe} not found: install Debian's chromium and chromium-driver "
                        "(scripts/setup.sh does as root) to run the browser tests")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", "--window-size=1500,1300"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _broken_images(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);")


def _wait_images(driver, timeout: float = 10.0) -> list[str]:
    end = time.monotonic() + timeout
    broken = _broken_images(driver)
    while broken and time.monotonic() < end:
        time.sleep(0.1)
        broken = _broken_images(driver)
    return broken


def _first_column_values(driver, table_css: str, col: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr'))"
        ".filter(r => !r.hidden).map(r => r.cells[arguments[1]].textContent);", table_css, col)


def check_site(site: Path, shots: Path | None = None) -> list[str]:
    """Load the landing page and the explorer of the site in ``site`` and check them; returns the
    list of checks done (each asserted). Screenshots go to ``shots`` (or $XFR_SCREENSHOTS)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    site = Path(site).resolve()
    shots = Path(os.environ.get("XFR_SCREENSHOTS") or shots or site.parent / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    done: list[str] = []
    driver = chromium_driver()
    try:
        # ---------------------------------------------------------------- landing page
        driver.get((site / "index.html").as_uri())
        assert driver.title == "xfr results"
        assert not _errors(driver), f"console errors on index.html: {_errors(driver)}"
        done.append("index.html: loads from file:// with no console error")
        hrefs = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);")
        local = {unquote(urlparse(h).path) for h in hrefs if h.startswith("file://")}
        missing = sorted(p for p in local if not Path(p).is_file())
        assert not missing, f"index.html links to missing files: {missing}"
        done.append(f"index.html: all {len(local)} local link targets exist ({len(hrefs)} links)")
        assert not _wait_images(driver), f"broken images on index.html: {_broken_images(driver)}"
        claims = driver.find_elements(By.CSS_SELECTOR, "#claims tbody tr")
        if claims:
            verdicts = driver.execute_script(
                "return Array.from(document.querySelectorAll('#claims tbody tr')).map(r => r.dataset.verdict);")
            first = sorted(set(verdicts))[0]
            Select(driver.find_element(By.ID, "verdict-filter")).select_by_value(first)
            shown = [r for r in claims if r.is_displayed()]
            assert len(shown) == verdicts.count(first)
            assert all(r.get_attribute("data-verdict") == first for r in shown)
            done.append(f"claims table: the verdict filter '{first}' shows {len(shown)} of {len(claims)} rows")
            Select(driver.find_element(By.ID, "verdict-filter")).select_by_value("")
        boards = driver.find_elements(By.CSS_SELECTOR, "table.leaderboard")
        assert boards, "no leaderboard table on index.html"
        table = boards[0]
        n_cols = len(table.find_elements(By.CSS_SELECTOR, "thead th"))
        col = n_cols - 1  # seconds / image: every task has it
        header = table.find_elements(By.CSS_SELECTOR, "thead th")[col]

        def rows() -> list[str]:
            return [r.find_elements(By.TAG_NAME, "td")[col].text for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

        header.click()
        asc = rows()
        header.click()
        desc = rows()
        nums = [float(v) for v in asc if v]
        assert nums == sorted(nums), f"ascending sort gave {asc}"
        assert [float(v) for v in desc if v] == sorted(nums, reverse=True), f"descending sort gave {desc}"
        done.append(f"leaderboards: {len(boards)} tables; clicking '{header.text}' sorts ascending, then descending")
        driver.execute_script("window.scrollTo(0, 0);")
        driver.save_screenshot(str(shots / "landing.png"))
        driver.execute_script("document.getElementById('claims-section').scrollIntoView();")
        driver.save_screenshot(str(shots / "landing_claims.png"))

        # ---------------------------------------------------------------- explorer
        driver.get((site / "explorer.html").as_uri())
        assert not _errors(driver), f"console errors on explorer.html: {_errors(driver)}"
        tabs = driver.find_elements(By.CSS_SELECTOR, "#tabs button")
        assert tabs, "the explorer shows no collection"
        done.append(f"explorer.html: loads with no console error; {len(tabs)} collections")
        for k in range(len(tabs)):
            tab = driver.find_elements(By.CSS_SELECTOR, "#tabs button")[k]
            tab.click()
            rows_all = driver.find_elements(By.CSS_SELECTOR, "#items tbody tr")
            assert rows_all, f"collection {tab.text} shows no row"
            driver.find_element(By.ID, "f-maps").click()  # with maps only
            with_maps = [r for r in rows_all if r.is_displayed()]
            assert with_maps, f"collection {tab.text}: no item with maps"
            with_maps[0].click()
            n_maps = int(with_maps[0].find_elements(By.TAG_NAME, "td")[-1].text)
            figs = driver.find_elements(By.CSS_SELECTOR, "#maps figure.map")
            assert len(figs) == n_maps, f"{tab.text}: row says {n_maps} maps, viewer shows {len(figs)}"
            assert not _wait_images(driver), f"{tab.text}: broken images {_broken_images(driver)}"
            done.append(f"explorer '{tab.text}': {len(rows_all)} rows, {len(with_maps)} with maps; "
                        f"selecting one shows its {n_maps} maps, every image loaded")
        # the LFW pairs: sort by C-Score, filter the wrong decisions, select a pair
        tabs = driver.find_elements(By.CSS_SELECTOR, "#tabs button")
        lfw = next((t for t in tabs if t.text.startswith("LFW pairs")), None)
        if lfw is not None:
            lfw.click()
            heads = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#items thead th")]
            c = heads.index("C-Score")
            h = driver.find_elements(By.CSS_SELECTOR, "#items thead th")[c]
            h.click()
            vals = [float(v) for v in _first_column_values(driver, "#items", c)]
            assert vals == sorted(vals), "C-Score ascending"
            h.click()
            vals_desc = [float(v) for v in _first_column_values(driver, "#items", c)]
            assert vals_desc == sorted(vals, reverse=True), "C-Score descending"
            done.append("LFW pairs: clicking 'C-Score' sorts the rows by C-Score, ascending then descending")
            n_all = len(_first_column_values(driver, "#items", 0))
            sel = driver.find_element(By.CSS_SELECTOR, "#filters select[data-col='correct']")
            Select(sel).select_by_value("no")
            wrong = _first_column_values(driver, "#items", heads.index("correct"))
            assert set(wrong) <= {"no"} and len(wrong) < n_all
            done.append(f"LFW pairs: the filter correct = no keeps {len(wrong)} of {n_all} pairs (the wrong decisions)")
            driver.find_element(By.ID, "f-maps").click()  # a wrong decision with maps, when there is one
            shown = [r for r in driver.find_elements(By.CSS_SELECTOR, "#items tbody tr") if r.is_displayed()]
            if not shown:
                Select(sel).select_by_value("")
                shown = [r for r in driver.find_elements(By.CSS_SELECTOR, "#items tbody tr") if r.is_displayed()]
            row = shown[0]
            row.click()
            assert driver.find_elements(By.CSS_SELECTOR, "#maps figure.input")
            assert not _wait_images(driver)
            driver.save_screenshot(str(shots / "explorer_pair.png"))
            done.append("LFW pairs: selecting a pair shows its two faces and its maps")
        assert not _errors(driver), f"console errors after the interactions: {_errors(driver)}"
        done.append("no console error after all interactions")
    finally:
        driver.quit()
    return done
