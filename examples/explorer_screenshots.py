"""The README's pictures of the graph explorer: its pages in viz/, stepped in a headless Chromium
and photographed mid-backward, with the running op outlined in red and scrolled into view.

    tinygrad-mnist graph --html --out viz && python examples/explorer_screenshots.py viz

Needs the dev extras (selenium) and Debian's chromium and chromium-driver.
"""
import argparse
import pathlib
import shutil

from selenium import webdriver
from selenium.webdriver.common.by import By

SHOTS = [("scalar_expression.html", 3, "explorer_scalar.png", (1400, 1150)),
         ("mlp.html", 12, "explorer_mlp.png", (1400, 900)),
         ("vit.html", 32, "explorer_vit.png", (1400, 1000))]     # at attention's softmax


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("viz", type=pathlib.Path, help="the folder of the explorer's pages")
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=webdriver.ChromeService(shutil.which("chromedriver")),
                              options=options)
    try:
        for page, steps, picture, (width, height) in SHOTS:
            driver.set_window_size(width, height)
            driver.get((args.viz / page).resolve().as_uri())
            for _ in range(steps):                      # the stepper's own "next" button
                driver.find_element(By.ID, "next").click()
            assert driver.find_elements(By.CSS_SELECTOR, "#graph .hl-op"), page
            driver.save_screenshot(str(args.viz / picture))
            print(args.viz / picture)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
