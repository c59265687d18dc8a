"""The evaluation report in a real browser: every table and figure is there and loads.

`evaluate` writes the report of a small synthetic shop; headless Chromium (Playwright) opens
index.html from the file system, and the page's tables are checked against report.json.
"""

from __future__ import annotations

import json

import pytest
from helpers.browser import CHROMIUM, CHROMIUM_ARGS, require_browser

from offline.datasets import generate
from online.eventlog import EventLog
from online.models import DAY_US
from online.settings import Settings

pytestmark = pytest.mark.slow

FIGURES = ("roc.png", "pr.png", "gains.png", "importances.png", "calibration.png",
           "auc_over_time.png", "segments.png")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    require_browser()
    from offline.evaluation import evaluate

    root = tmp_path_factory.mktemp("shop")
    settings = Settings(data_dir=root)
    with EventLog(settings.event_log_path) as log:
        for chunk in generate(80, 4000, seed=2):
            log.append(chunk, now_us=2**62)
    out = root / "report"
    evaluate(settings, 2 * DAY_US, out, max_rows=500)
    return out


@pytest.fixture(scope="module")
def page(report_dir):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 900})
            pg.set_default_timeout(20_000)
            pg.goto((report_dir / "index.html").as_uri())
            pg.wait_for_load_state("load")
            yield pg
        finally:
            browser.close()


def _cells(page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"{selector} tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")


def test_every_figure_is_shown_and_decodes(page, report_dir) -> None:
    shown = page.eval_on_selector_all(
        "figure img", "imgs => imgs.map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert sorted(src for src, _ in shown) == sorted(FIGURES)
    for src, width in shown:
        assert width > 100, f"{src} did not load in the browser"
        assert (report_dir / src).stat().st_size > 0


def test_tables_show_the_reports_figures(page, report_dir) -> None:
    body = json.loads((report_dir / "report.json").read_text())
    p, s = body["propensity"], body["segments"]
    metrics = {row[0]: row for row in _cells(page, "#metrics")[1:]}
    assert {"base rate (test period)", "RFM rule (test period)",
            "batch logistic (test period)", "online (test period)"} <= set(metrics)
    assert metrics["online (test period)"][1] == f"{p['online_auc']:.4f}"
    assert metrics["RFM rule (test period)"][1] == f"{p['reference']['RFM rule']['auc']:.4f}"
    assert metrics["base rate (test period)"][1] == "0.5000"  # a constant ranks nothing

    intervals = _cells(page, "#auc-intervals")
    assert {r[0] for r in intervals[1:]} == {f"online - {k}" for k in
                                             p["test_period"]["auc_difference"]["vs"]}
    assert "paired bootstrap over users" in page.inner_text("#auc-intervals caption")

    lift = _cells(page, "#lift-gains")
    assert lift[0][:2] == ["model", "top 1%"] and "top 10%" in lift[0]
    assert {r[0] for r in lift[1:]} == set(p["test_period"]["lift_gains"])

    imp = _cells(page, "#importances")[1:]
    want = p["test_period"]["importances"]["features"]
    assert [r[0] for r in imp] == [f["feature"] for f in want[:20]]

    quality = dict(r for r in _cells(page, "#segments-quality")[1:])
    assert quality["k"] == str(s["k"])
    for seg in s["business"]:
        rows = {r[0]: r for r in _cells(page, f"#segment-{seg['id']}")[1:]}
        assert set(rows) == {"spend", "orders", "days since last purchase", "events",
                             "average order value", "purchase score"}
        assert rows["spend"][2] == str(seg["users"])
    assert sum(seg["users"] for seg in s["business"]) == s["users_sampled"]
