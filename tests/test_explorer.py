"""The graph explorer in a real headless browser (Debian's chromium and chromedriver, which
.ci/run installs): it makes no network request and logs no script error, module boxes collapse
and expand, and stepping the backward pass to its end shows every leaf's .grad."""
import json

import numpy as np
import pytest

from tinygrad_mnist import Tensor, manual_seed, nn
from tinygrad_mnist.viz import explore, record_modules

from browser import open_page, require_browser, requests_and_errors, start_browser

pytestmark = pytest.mark.slow        # drives a headless browser (pytest -m "not slow" skips it)
require_browser()
from browser import By  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def shown_leaf_gradients(browser):
    rows = browser.find_elements(By.CSS_SELECTOR, "#leaf-grads tr[data-node]")
    return {row.get_attribute("data-name"): json.loads(row.get_attribute("data-grad") or "null")
            for row in rows}


def scalar_graph():
    a, b = Tensor(2.0, requires_grad=True), Tensor(-3.0, requires_grad=True)
    c, f = Tensor(10.0, requires_grad=True), Tensor(-2.0, requires_grad=True)
    return (a * b + c) * f * a, {"a": a, "b": b, "c": c, "f": f}        # a is used twice


def test_stepping_a_scalar_graph_to_the_end_shows_each_leafs_grad(browser, tmp_path):
    out, names = scalar_graph()
    page = explore(out, tmp_path / "scalar", names=names)
    open_page(browser, tmp_path / "scalar.html")
    assert browser.find_element(By.ID, "step-label").text.startswith("step 0 of ")
    browser.find_element(By.ID, "next").click()          # the last mul: one of a's two uses
    info = browser.find_element(By.ID, "step-info").text
    assert info.startswith("mul") and "to a: -8" in info and "contribution 1 of 2" in info
    browser.find_element(By.ID, "last").click()
    shown = shown_leaf_gradients(browser)
    out.backward()
    for name, t in names.items():
        assert shown[name]["value"] == pytest.approx(float(t.grad), rel=1e-12), name
    browser.find_element(By.ID, "first").click()                    # and back to the start
    assert browser.find_element(By.ID, "step-label").text.startswith("step 0 of ")
    urls, errors = requests_and_errors(browser)
    assert errors == []
    assert all(u.startswith(("file:", "data:", "about:")) for u in urls), urls
    assert page.endswith("scalar.html")
    browser.save_screenshot(str(tmp_path / "scalar.png"))


def test_module_boxes_collapse_and_expand_and_the_mlp_steps_to_grad(browser, tmp_path):
    manual_seed(0)
    model = nn.MLP([12, 8, 6, 3], dropout=0.25)
    x = Tensor(np.random.default_rng(0).normal(size=(5, 12)))
    manual_seed(1)                                        # the dropout masks of this forward
    with record_modules():
        loss = nn.cross_entropy(model(x), np.array([0, 1, 2, 1, 0]))
    explore(loss, tmp_path / "mlp.html", names={"images": x})
    open_page(browser, tmp_path / "mlp.html")

    def titles():
        return [g.find_element(By.TAG_NAME, "title").get_attribute("textContent")
                for g in browser.find_elements(By.CSS_SELECTOR, "#graph g.node")]
    assert not any(t.startswith("m") for t in titles())           # everything expanded
    boxes = browser.find_elements(By.CSS_SELECTOR, "#graph g.cluster")
    inner = [b for b in boxes if b.find_element(By.TAG_NAME, "text").text.startswith("Linear")]
    inner[0].find_element(By.TAG_NAME, "text").click()             # collapse one Linear box
    collapsed = [t for t in titles() if t.startswith("m")]
    assert len(collapsed) == 1
    module = next(g for g in browser.find_elements(By.CSS_SELECTOR, "#graph g.node")
                  if g.find_element(By.TAG_NAME, "title").get_attribute("textContent")
                  == collapsed[0])
    module.find_element(By.TAG_NAME, "text").click()               # and expand it again
    assert not any(t.startswith("m") for t in titles())

    browser.find_element(By.ID, "last").click()
    shown = shown_leaf_gradients(browser)
    loss.backward()
    for name, p in model.named_parameters():
        assert shown[name]["norm"] == pytest.approx(float(np.linalg.norm(p.grad)), rel=1e-5)
        assert shown[name]["mean"] == pytest.approx(float(p.grad.mean()), rel=1e-4, abs=1e-6)
    urls, errors = requests_and_errors(browser)
    assert errors == [] and all(u.startswith(("file:", "data:", "about:")) for u in urls)
    browser.save_screenshot(str(tmp_path / "mlp.png"))


def test_both_operands_of_a_square_are_counted_as_two_contributions():
    from tinygrad_mnist.viz.explorer import page_data
    a = Tensor(3.0, requires_grad=True)
    data = page_data(a * a, {"a": a}, "square")
    first = data["events"][0]                          # mul passes 3 to a, twice
    assert [(t["k"], t["of"], t["grad"]["value"]) for t in first["to"]] == [(1, 2, 3.0), (2, 2, 3.0)]
    assert first["to"][1]["sum"]["value"] == 6.0


NUMBER = r"(-?(?:\d+\.?\d*(?:e[+-]?\d+)?|NaN|Infinity))"


def shown_numbers(text, *names):
    """{name: float} for 'name NUMBER' pairs in a line the page shows ('min 1e-10, max ...')."""
    import re
    return {n: float(re.search(rf"{n} {NUMBER}", text).group(1).replace("Infinity", "inf"))
            for n in names}


def same_number(shown, true):
    if np.isnan(true):
        return np.isnan(shown)
    return shown == pytest.approx(true, rel=1e-5, abs=0)        # six significant digits


def test_every_number_the_page_shows_is_the_engines(browser, tmp_path):
    """Tiny, huge, negative, integer and NaN values and gradients, read off the page."""
    values = {"tiny": -2.29629e-10, "small": 3.2e-7, "huge": 4.5e20, "int": 42.0,
              "neg": -7.25, "nan": float("nan")}
    leaves = {k: Tensor(v, requires_grad=True, dtype=np.float64) for k, v in values.items()}
    t = leaves
    out = (t["tiny"] * t["huge"] + t["int"] * t["neg"] + t["small"] * t["int"]) * t["nan"]
    explore(out, tmp_path / "numbers", names=leaves)
    open_page(browser, tmp_path / "numbers.html")
    browser.find_element(By.ID, "last").click()
    out.backward()
    for name, leaf in leaves.items():
        shown = browser.execute_script(
            "const i = DATA.nodes.findIndex(n => n.name === arguments[0]); nodeInfo(i);"
            "return document.getElementById('node-info').innerText;", name)
        value = float(shown.split("value: ")[1].split()[0].replace("Infinity", "inf"))
        gradient = float(shown.split("gradient after backward: ")[1].split()[0]
                         .replace("Infinity", "inf"))
        assert same_number(value, float(leaf.data)), (name, shown)
        assert same_number(gradient, float(leaf.grad)), (name, shown)


def test_statistics_shown_for_the_mlp_are_the_engines_and_consistent(browser, tmp_path):
    manual_seed(0)
    model = nn.MLP([12, 8, 6, 3])
    x = Tensor(np.random.default_rng(0).normal(size=(5, 12)) * 3e-9)     # grads near 1e-10
    with record_modules():                                # parameter names and boxes
        loss = nn.cross_entropy(model(x), np.array([0, 1, 2, 1, 0]))
    explore(loss, tmp_path / "stats.html", names={"images": x})
    open_page(browser, tmp_path / "stats.html")
    browser.find_element(By.ID, "last").click()
    rows = {row.get_attribute("data-name"): row.find_elements(By.TAG_NAME, "td")[1].text
            for row in browser.find_elements(By.CSS_SELECTOR, "#leaf-grads tr[data-node]")}
    loss.backward()
    for name, p in model.named_parameters():
        shown = shown_numbers(rows[name], "min", "max", "mean", "norm")
        assert shown["min"] <= shown["mean"] <= shown["max"], (name, rows[name])
        g = p.grad.astype(np.float64)
        for key, true in (("min", g.min()), ("max", g.max()), ("mean", g.mean()),
                          ("norm", np.linalg.norm(g))):
            assert same_number(shown[key], float(true)), (name, key, rows[name])


def test_stepping_scrolls_the_running_op_into_view(browser, tmp_path):
    manual_seed(0)
    model = nn.MLP([12, 8, 8, 8, 8, 3])                 # tall: the top and bottom do not fit
    x = Tensor(np.random.default_rng(0).normal(size=(5, 12)))
    with record_modules():                                # parameter names and boxes
        loss = nn.cross_entropy(model(x), np.array([0, 1, 2, 1, 0]))
    explore(loss, tmp_path / "tall.html", names={"images": x})
    browser.set_window_size(1000, 500)
    try:
        open_page(browser, tmp_path / "tall.html")
        for _ in range(4):
            browser.find_element(By.ID, "next").click()
            visible = browser.execute_script(
                "const g = document.querySelector('#graph .hl-op');"
                "const box = document.getElementById('graph').getBoundingClientRect();"
                "const r = g.getBoundingClientRect();"
                "return r.bottom > box.top && r.top < box.bottom && r.right > box.left"
                " && r.left < box.right && r.top >= 0 && r.bottom <= window.innerHeight;")
            assert visible
        browser.find_element(By.ID, "last").click()
        browser.find_element(By.ID, "prev").click()            # the first ops, at the top
        assert browser.execute_script(
            "const r = document.querySelector('#graph .hl-op').getBoundingClientRect();"
            "return r.top >= 0 && r.bottom <= window.innerHeight;")
    finally:
        browser.set_window_size(1400, 1000)
