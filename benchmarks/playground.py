"""The playground page's speed in headless Chromium: one forward and backward pass (what the
page computes after each stroke) of the default MLP and of LeNet-5, on a test digit.

    python -m benchmarks.playground [--rounds 200] [--out benchmarks]

Milliseconds, median (min-max) over the rounds, measured in the page with performance.now()
(Chromium rounds it to 0.1 ms in a file:// page). Writes PLAYGROUND.md into --out.
"""
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

from benchmarks.report import arguments, ms_range, write_report  # noqa: E402
from tinygrad_mnist import manual_seed  # noqa: E402
from tinygrad_mnist.mnist.data import DATASETS  # noqa: E402
from tinygrad_mnist.mnist.models import build, describe  # noqa: E402
from tinygrad_mnist.viz.playground import playground  # noqa: E402


def browser():
    from selenium import webdriver
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    return webdriver.Chrome(service=webdriver.ChromeService(shutil.which("chromedriver")),
                            options=options)


def main():
    args = arguments(__doc__, rounds=200)
    info = DATASETS["mnist"]
    digit = (np.random.default_rng(0).random(784) > 0.8).astype(np.uint8) * 255
    lines = ["# The playground: one forward and backward pass in the page", "",
             f"`python -m benchmarks.playground`: headless Chromium, {args.rounds} rounds of "
             "the page's `run` (standardize, forward through every layer, softmax, backward "
             "of the chosen class's score to the pixels) on one image; milliseconds, median "
             "(min–max); and the page's whole answer to a stroke (read the 280x280 drawing, "
             "preprocess it as `predict` does, run, redraw every panel).", "",
             "| model | forward + backward, ms | whole update after a stroke, ms |",
             "| --- | --- | --- |"]
    driver = browser()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for arch in ("mlp", "lenet5"):
                manual_seed(0)
                model = build(arch).eval()
                page = playground(model, info, Path(tmp) / f"{arch}.html",
                                  digits=[(0, digit.reshape(28, 28), 0, 0)])
                driver.get(Path(page).resolve().as_uri())
                times = driver.execute_script(
                    "const p = window.playground, x = p.digitPixels(DATA.digits[0]);"
                    "p.time(x, 20); return p.time(x, arguments[0]);", args.rounds)
                updates = driver.execute_script(
                    "const c = document.getElementById('pad').getContext('2d');"
                    "c.strokeStyle = '#fff'; c.lineWidth = 22; c.lineCap = 'round';"
                    "c.beginPath(); c.moveTo(80, 60); c.lineTo(200, 60); c.lineTo(120, 230);"
                    "c.stroke(); const t = [];"
                    "for (let i = 0; i < arguments[0]; i++) { const t0 = performance.now();"
                    " window.playground.update(); t.push(performance.now() - t0); } return t;",
                    max(20, args.rounds // 5))
                name = describe(arch, (512, 256), "relu")
                lines.append(f"| {name} | {ms_range([t / 1000 for t in times], 2)} | "
                             f"{ms_range([t / 1000 for t in updates], 1)} |")
                print(lines[-1], statistics.median(times), flush=True)
    finally:
        driver.quit()
    write_report(args.out, "PLAYGROUND.md", "\n".join(lines))


if __name__ == "__main__":
    main()
