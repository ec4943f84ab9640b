"""End to end in a real headless browser: Playwright (Python) driving Debian's Chromium against
the review app on a live uvicorn server at 127.0.0.1.

Needs `apt-get install -y chromium` (Playwright's own browser download is not used); another
binary can be named with WILDREID_CHROMIUM. Every page visited is saved as a screenshot in
test-artifacts/e2e/.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from live_web import build_catalogue, chromium, serving, watched_page

from wildreid.catalog.photos import content_hash
from wildreid.catalog.store import Catalog
from wildreid.data.dataset import load_dataset
from wildreid.web.app import create_app
from wildreid.web.config import WebConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "e2e"
CHROMIUM = os.environ.get("WILDREID_CHROMIUM", "/usr/bin/chromium")
TOKEN = "e2e-review-token"
QUERY, QUERY_IDENTITY = "47", "NyalaData_32"  # a NyalaData query photo and who it shows
DROPPED = "71"  # a second query photo, dropped onto the page


@pytest.fixture(scope="module")
def server(shared_data, lite0_backbone, tmp_path_factory):
    """A 40-photo catalogue served on 127.0.0.1; yields (base URL, catalogue path, dataset)."""
    nyala = load_dataset(shared_data / "NyalaData")
    cache = tmp_path_factory.getbasetemp() / "wildreid-embedding-cache"  # shared with test_web*.py
    path = build_catalogue(tmp_path_factory.mktemp("e2e") / "catalog.sqlite", nyala, lite0_backbone, cache)
    app = create_app(WebConfig(path, token=TOKEN, cache_dir=cache), backbone=lite0_backbone)
    with serving(app) as base:
        yield base, path, nyala


@pytest.fixture(scope="module")
def browser():
    with chromium(CHROMIUM, ARTIFACTS) as browser:
        yield browser


@pytest.fixture
def tab(browser):
    with watched_page(browser) as page:
        yield page


def snap(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def image_loaded(page, selector: str) -> bool:
    return page.locator(selector).first.evaluate("image => image.complete && image.naturalWidth > 0")


def test_reviewer_uploads_confirms_and_finds_the_photo_in_the_gallery(server, tab):
    base, catalog_path, nyala = server
    page = tab
    query_path = Path(nyala.table.loc[nyala.table["image_id"] == QUERY, "path"].item())

    page.goto(base + "/")
    snap(page, "01-home-signed-out")
    page.get_by_role("link", name="Sign in").first.click()
    page.wait_for_url("**/login**")
    snap(page, "02-login")
    page.get_by_label("Your name").fill("Alice")
    page.get_by_label("Review token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + "/")
    assert page.locator("header .who").inner_text().startswith("Alice")

    page.set_input_files("#photos", str(query_path))
    page.get_by_label("Sighting date").fill("2024-05-01")
    page.get_by_label("Location").fill("Ndumo, waterhole 3")
    assert "1 chosen" in page.locator("#chosen").inner_text()
    snap(page, "03-upload")
    page.locator("#upload-button").click()
    page.wait_for_url("**/jobs/**")
    snap(page, "04-job")
    page.wait_for_url("**/review/**", timeout=120_000)  # the page polls the job, then moves on
    page.wait_for_load_state("networkidle")
    snap(page, "05-review")
    page.screenshot(path=str(ARTIFACTS / "05-review-viewport.png"))  # the picture for docs/

    candidates = page.locator("article.candidate")
    assert candidates.count() == 5
    for rank in range(1, 6):
        assert image_loaded(page, f'article.candidate[data-rank="{rank}"] .pair figure:nth-child(2) img')
    truth = candidates.filter(has=page.locator(f'a.who:text-is("{QUERY_IDENTITY}")'))
    assert truth.count() == 1, "the true individual should be among the top 5"
    truth.get_by_role("button", name=f"Confirm: this is {QUERY_IDENTITY}").click()

    page.wait_for_url(f"**/individuals/{QUERY_IDENTITY}?added=*")
    page.wait_for_load_state("networkidle")
    snap(page, "06-individual")
    assert "added to" in page.locator(".flash.good").inner_text()
    uploaded = f'#gallery img[src="/photos/{content_hash(query_path.read_bytes())}"]'
    assert page.locator(uploaded).count() == 1 and image_loaded(page, uploaded)
    history = page.locator("#history").inner_text()
    assert "confirmed by Alice" in history and "2024-05-01" in history and "Ndumo, waterhole 3" in history

    page.get_by_role("searchbox", name="Find an individual").fill(QUERY_IDENTITY)
    page.keyboard.press("Enter")
    page.wait_for_url("**/individuals?q=*")
    snap(page, "07-search")
    assert page.locator("ul.cards li").count() == 1
    assert "6 photos" in page.locator("ul.cards li").inner_text()

    with Catalog(catalog_path) as catalog:
        [decision] = catalog.decisions()
        assert (decision["outcome"], decision["individual_id"], decision["reviewer"]) == (
            "match",
            QUERY_IDENTITY,
            "Alice",
        )
    assert page.problems == []


def test_drag_and_drop_upload_then_skip(server, tab):
    base, catalog_path, nyala = server
    page = tab
    dropped = Path(nyala.table.loc[nyala.table["image_id"] == DROPPED, "path"].item())
    page.goto(base + "/login?next=/")
    page.get_by_label("Your name").fill("Bob")
    page.get_by_label("Review token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + "/")

    # What a browser does when a file is dropped: a drop event whose DataTransfer holds the file.
    page.locator("#drop").evaluate(
        """(zone, [data, name]) => {
             const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
             const transfer = new DataTransfer();
             transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
             zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
           }""",
        [base64.b64encode(dropped.read_bytes()).decode(), "dropped.jpg"],
    )
    assert page.locator("#photos").evaluate("input => input.files.length") == 1
    assert "dropped.jpg" in page.locator("#chosen").inner_text()
    snap(page, "11-dropped")
    page.locator("#upload-button").click()
    page.wait_for_url("**/review/**", timeout=120_000)
    assert "dropped.jpg" in page.locator("h1").inner_text()
    page.get_by_role("button", name="Skip for now").click()
    page.wait_for_url(base + "/review")
    snap(page, "12-queue")
    assert "dropped.jpg" in page.locator("section", has_text="Skipped").inner_text()
    with Catalog(catalog_path) as catalog:
        assert [d["outcome"] for d in catalog.decisions() if d["reviewer"] == "Bob"] == ["skip"]
    assert page.problems == []
