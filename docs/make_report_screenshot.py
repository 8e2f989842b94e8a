"""Screenshot of `vcorner report` for the README, taken in headless Chromium (Debian's chromium + chromium-driver).

    vcorner batch examples/xrays --centers examples/xrays/centers.csv --out out/examples --vis
    vcorner report out/examples --annotations examples/xrays/annotations.json
    python docs/make_report_screenshot.py out/examples/report.html docs/report.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from selenium import webdriver


def main(page: Path, png: Path) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService("/usr/bin/chromedriver"))
    try:
        driver.get(page.resolve().as_uri())
        driver.execute_script("document.querySelector('#images > tbody > tr details').open = true;")
        driver.save_screenshot(str(png))
    finally:
        driver.quit()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
