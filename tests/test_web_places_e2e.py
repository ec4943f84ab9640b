"""Time and place in a real headless browser (Playwright driving Debian's Chromium, as
test_web_e2e.py): a photo's EXIF date shows on its review page, and its individual's page maps
the sightings with an inline SVG that loads nothing from elsewhere. Screenshots go to
test-artifacts/e2e-places/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from live_web import PASSWORD, USERS, chromium, serving, sign_in, watched_page
from test_places import _dataset_folder, exif_jpeg

from wildreid.catalog import users
from wildreid.catalog.importer import import_dataset
from wildreid.catalog.store import Catalog
from wildreid.data.dataset import load_dataset
from wildreid.web.app import create_app
from wildreid.web.config import WebConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "e2e-places"
CHROMIUM = os.environ.get("WILDREID_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def server(lite0_backbone, tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e-places")
    path = folder / "catalog.sqlite"
    with Catalog(path) as catalog:
        import_dataset(catalog, load_dataset(_dataset_folder(folder / "data")))
        for name, (role, token) in USERS.items():
            users.add_user(catalog, name, role, PASSWORD, api_token=token)
    app = create_app(WebConfig(path, cache_dir=folder / "cache"), backbone=lite0_backbone)
    with serving(app) as base:
        yield base, path, folder


def test_the_exif_date_shows_on_the_review_page_and_the_individual_maps_its_sightings(server, lite0_backbone):
    base, path, folder = server
    photo = folder / "camera.jpg"
    photo.write_bytes(exif_jpeg("2025:07:14 06:31:02", "+02:00", (-24.52, 31.3), colour=(90, 90, 30)))
    with chromium(CHROMIUM, ARTIFACTS) as browser, watched_page(browser) as page:
        sign_in(page, base, "alice")
        assert "only for photos" in page.locator("#place-hint").inner_text()
        page.set_input_files("#photos", str(photo))
        page.screenshot(path=str(ARTIFACTS / "01-upload.png"), full_page=True)
        page.locator("#upload-button").click()
        page.wait_for_url("**/review/**", timeout=120_000)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(ARTIFACTS / "02-review.png"), full_page=True)
        assert "seen 2025-07-14 06:31" in page.locator("main").inner_text()

        with Catalog(path) as catalog:
            [query] = catalog.queries()
            catalog.decide(query["id"], "match", individual_id="A", reviewer="alice", preset="offline")
        page.goto(base + "/individuals/A")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(ARTIFACTS / "03-individual-map.png"), full_page=True)
        svg = page.locator("#where svg.sightings-map")
        assert svg.count() == 1 and svg.locator("circle.sighting").count() == 2
        assert svg.bounding_box()["width"] > 300  # drawn, at a readable size
        scale = svg.locator(".scale-bar text").text_content() or ""
        assert scale.endswith((" m", " km")), scale
        assert page.problems == []
