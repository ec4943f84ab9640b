"""The keypoint-lines toggle of the review page in a real headless browser (Playwright driving
Debian's Chromium, as test_web_review_page_e2e.py): the picture is drawn when asked for, and the
strength of the evidence on the animal is said beside the toggle (issue 21). Screenshots go to
test-artifacts/e2e/lines/."""

from __future__ import annotations

import os
import re
from pathlib import Path

from live_web import build_catalogue, chromium, serving, sign_in, watched_page
from playwright.sync_api import expect

from wildreid.catalog.store import Catalog
from wildreid.data.dataset import load_dataset
from wildreid.evaluate.pictures import WEAK_EVIDENCE
from wildreid.web.app import create_app
from wildreid.web.config import WebConfig

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "e2e" / "lines"
CHROMIUM = os.environ.get("WILDREID_CHROMIUM", "/usr/bin/chromium")
QUERY = "47"  # a NyalaData query photo of NyalaData_32


def test_the_toggle_says_how_strong_the_evidence_on_the_animal_is(
    shared_data, lite0_backbone, tmp_path, tmp_path_factory
):
    nyala = load_dataset(shared_data / "NyalaData")
    cache = tmp_path_factory.getbasetemp() / "wildreid-embedding-cache"  # shared with test_web*.py
    path = build_catalogue(tmp_path / "catalog.sqlite", nyala, lite0_backbone, cache)
    query_file = nyala.table.loc[nyala.table["image_id"] == QUERY, "path"].item()
    with Catalog(path) as catalog:
        best = catalog.images("NyalaData_32")[0]
        query = catalog.add_query(Path(query_file).read_bytes(), "jpg", dataset="NyalaData")
        candidate = {"rank": 1, "individual_id": "NyalaData_32", "score": 0.9}
        candidate |= {"image_id": best["id"], "sha256": best["sha256"]}
        catalog.set_query_result(
            query["id"], {"prediction": "NyalaData_32", "threshold": 0.5, "preset": "fusion", "candidates": [candidate]}
        )
    # A cache of its own: in the shared one another test may have drawn this pair already, and a
    # drawn picture's evidence is shown before the toggle (asserted empty below).
    app = create_app(WebConfig(path, cache_dir=tmp_path / "app-cache", preset="fusion"), backbone=lite0_backbone)
    with serving(app) as base, chromium(CHROMIUM, ARTIFACTS) as browser, watched_page(browser) as page:
        sign_in(page, base, "alice", f"/review/{query['id']}")
        said = page.locator("article.candidate [data-evidence]")
        assert said.inner_text() == ""  # not drawn yet: nothing to say
        page.keyboard.press("k")
        evidence = re.compile(r"(\d+) match(?:es)? on the animal(?: — weak evidence)?")
        expect(said).to_have_text(evidence, timeout=120_000)  # from the picture's response
        overlay = page.locator("img.overlay")
        expect(overlay).to_have_attribute("src", re.compile("^blob:"))  # the fetched picture itself
        assert overlay.evaluate("image => image.decode().then(() => image.naturalWidth)") > 600
        text = said.inner_text()
        count = int(evidence.fullmatch(text)[1])
        assert text.endswith("weak evidence") == (count < WEAK_EVIDENCE)
        assert overlay.get_attribute("alt").endswith(f"NyalaData_32: {text}")
        page.screenshot(path=str(ARTIFACTS / "01-lines.png"))
        assert page.problems == []
