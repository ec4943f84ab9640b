"""The single-photo review page in a real headless browser (Playwright driving Debian's Chromium,
as test_web_review_e2e.py): a decision in one screen at 1366x900, "not this one" taken as an
answer, keyboard shortcuts, and a phone's 390 px without overflow. Screenshots go to
test-artifacts/e2e/review-page/; with WILDREID_DOCS_SCREENSHOTS=1 the 1366x900 one also to
docs/screenshots/review.png (the README's).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from live_web import build_catalogue, chromium, serving, sign_in
from PIL import Image

from wildreid.catalog.store import Catalog
from wildreid.data.dataset import load_dataset
from wildreid.web.app import create_app
from wildreid.web.config import WebConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "e2e" / "review-page"
CHROMIUM = os.environ.get("WILDREID_CHROMIUM", "/usr/bin/chromium")
QUERY = "70"  # a photo of NyalaData_34 the catalogue (its photos 72-76) does not hold


@pytest.fixture(scope="module")
def server(shared_data, lite0_backbone, tmp_path_factory):
    nyala = load_dataset(shared_data / "NyalaData")
    cache = tmp_path_factory.getbasetemp() / "wildreid-embedding-cache"  # shared with test_web*.py
    path = build_catalogue(tmp_path_factory.mktemp("e2e-page") / "catalog.sqlite", nyala, lite0_backbone, cache)
    app = create_app(WebConfig(path, cache_dir=cache), backbone=lite0_backbone)
    with serving(app) as base:
        yield base, path, nyala


def small_png(shot: bytes, path: Path) -> None:
    """A screenshot for the docs, in 96 colours: about a third of the bytes, still legible."""
    Image.open(io.BytesIO(shot)).convert("RGB").quantize(colors=96).save(path, optimize=True)


def in_view(page, selector: str) -> bool:
    """Whether the element is wholly inside the viewport as it is scrolled now."""
    return page.locator(selector).first.evaluate(
        "e => { const r = e.getBoundingClientRect();"
        " return r.width > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth; }"
    )


def test_a_decision_fits_one_screen_and_answers_hold(server):
    base, catalog_path, nyala = server
    with chromium(CHROMIUM, ARTIFACTS) as browser:
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))

        sign_in(page, base, "alice")
        page.set_input_files("#photos", nyala.table.loc[nyala.table["image_id"] == QUERY, "path"].item())
        page.locator("#upload-button").click()
        page.wait_for_url("**/review/*", timeout=120_000)
        page.wait_for_load_state("networkidle")
        query_id = int(page.url.rsplit("/", 1)[-1])

        # one screen: the query once, each candidate with up to three catalogue photos
        height = page.evaluate("document.scrollingElement.scrollHeight")
        page.screenshot(path=str(ARTIFACTS / "01-review.png"))
        if os.environ.get("WILDREID_DOCS_SCREENSHOTS"):  # the README's picture, refreshed on request only
            small_png(page.screenshot(), PROJECT_ROOT / "docs" / "screenshots" / "review.png")
        # 8 animals of 5 photos: the page says how little its scores rest on (guard rails)
        assert "rest on little" in page.locator(".thin-evidence").first.inner_text()
        assert height <= 1.3 * 900, f"the review page is {height} px tall at 1366x900"
        rows = page.locator("article.candidate")
        assert rows.count() == 5
        assert page.locator("#candidates img[src*='/photos/']").count() >= 2 * rows.count()
        query_sha = page.locator(".query-photo img").get_attribute("src")
        assert page.locator(f"img[src='{query_sha}']").count() == 1  # not the pair shown twice
        for selector in ("#new-button", "#skip-button", "#new-name"):
            assert in_view(page, selector), selector
        for row in range(5):  # every candidate's confirm and "not this one", without scrolling
            assert in_view(page, f"article.candidate[data-rank='{row + 1}'] button[data-confirm]")
            assert in_view(page, f"article.candidate[data-rank='{row + 1}'] button[data-not]")
        assert "cosine" in page.locator("#score-meaning").inner_text()  # offline: what a score is
        assert "cosine" in rows.first.locator(".score").inner_text()
        assert "confirm the selected" in page.locator("#shortcuts").text_content()

        # "not this one" from the keyboard: candidate 2 is answered "different" and not offered again
        second = rows.nth(1).get_attribute("data-individual")
        page.keyboard.press("2")
        page.keyboard.press("x")
        page.wait_for_url(f"**/review/{query_id}?answered=*")
        assert "different animals" in page.locator("#saved").inner_text()
        assert second not in page.locator("article.candidate").evaluate_all(
            "rows => rows.map((r) => r.dataset.individual)"
        )
        assert second in page.locator("#ruled-out").inner_text()
        assert page.locator("#saved button").inner_text().startswith("Undo change #")
        page.screenshot(path=str(ARTIFACTS / "02-not-this-one.png"), full_page=True)

        # a phone: nothing wider than the screen, the History tab and the suggestion inside it
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(ARTIFACTS / "03-phone.png"), full_page=True)
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
        assert in_view(page, "header.top nav a[href='/history']")
        assert page.locator(".suggestion").evaluate("e => e.getBoundingClientRect().right <= innerWidth")
        for path in ("/review", "/history", "/individuals", "/merge?keep=NyalaData_34&absorb=NyalaData_41"):
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            assert page.evaluate("document.scrollingElement.scrollWidth") <= 390, path
        page.goto(base + f"/review/{query_id}")
        page.set_viewport_size({"width": 1366, "height": 900})
        page.reload()
        page.wait_for_load_state("networkidle")

        # confirm the first candidate from the keyboard
        first = page.locator("article.candidate").first.get_attribute("data-individual")
        page.keyboard.press("1")
        page.keyboard.press("c")
        page.wait_for_url("**/individuals/**")
        with Catalog(catalog_path) as catalog:
            assert catalog.query(query_id)["status"] == "matched"
            assert catalog.decisions(query_id=query_id)[-1]["individual_id"] == first
        assert problems == []
        context.close()
