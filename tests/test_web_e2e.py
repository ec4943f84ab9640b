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
from live_web import PASSWORD, build_catalogue, chromium, serving, sign_in, watched_page

from wildreid.catalog.photos import content_hash
from wildreid.catalog.store import Catalog
from wildreid.data.dataset import load_dataset
from wildreid.web.app import create_app
from wildreid.web.config import WebConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "e2e"
CHROMIUM = os.environ.get("WILDREID_CHROMIUM", "/usr/bin/chromium")
QUERY, QUERY_IDENTITY = "47", "NyalaData_32"  # a NyalaData query photo and who it shows
DROPPED = "71"  # a second query photo, dropped onto the page


@pytest.fixture(scope="module")
def server(shared_data, lite0_backbone, tmp_path_factory):
    """A 40-photo catalogue served on 127.0.0.1; yields (base URL, catalogue path, dataset)."""
    nyala = load_dataset(shared_data / "NyalaData")
    cache = tmp_path_factory.getbasetemp() / "wildreid-embedding-cache"  # shared with test_web*.py
    path = build_catalogue(tmp_path_factory.mktemp("e2e") / "catalog.sqlite", nyala, lite0_backbone, cache)
    app = create_app(WebConfig(path, cache_dir=cache), backbone=lite0_backbone)
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

    page.goto(base + "/")  # nothing is readable without signing in
    page.wait_for_url("**/login?next=%2F")
    snap(page, "02-login")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + "/")
    assert page.locator("header .who").inner_text().startswith("alice (reviewer)")

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
        assert image_loaded(page, f'article.candidate[data-rank="{rank}"] .strip figure img')  # its best photo
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
    assert "confirmed by alice" in history and "2024-05-01" in history and "Ndumo, waterhole 3" in history

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
            "alice",
        )
    assert page.problems == []


def test_drag_and_drop_upload_then_skip(server, tab):
    base, catalog_path, nyala = server
    page = tab
    dropped = Path(nyala.table.loc[nyala.table["image_id"] == DROPPED, "path"].item())
    sign_in(page, base, "bob")

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
    assert "dropped.jpg" in page.locator(".query-side .meta").first.inner_text()
    page.get_by_role("button", name="Skip for now").click()
    page.wait_for_url(base + "/review")
    snap(page, "12-queue")
    assert "dropped.jpg" in page.locator("section", has_text="Skipped").inner_text()
    with Catalog(catalog_path) as catalog:
        assert [d["outcome"] for d in catalog.decisions() if d["reviewer"] == "bob"] == ["skip"]
    assert page.problems == []


def test_roles_anonymous_viewer_and_reviewer(server, tab):
    """Nothing is readable without signing in; a viewer reads but cannot confirm; a reviewer can."""
    base, catalog_path, nyala = server
    page = tab
    with Catalog(catalog_path) as catalog:
        query = catalog.add_query(photo_bytes(nyala, "71"), "jpg", dataset="NyalaData", original_name="roles.jpg")
        best = catalog.images("NyalaData_34")[0]
        candidate = {"rank": 1, "individual_id": "NyalaData_34", "score": 0.9, "sha256": best["sha256"]}
        catalog.set_query_result(query["id"], {"threshold": 0.5, "preset": "offline", "candidates": [candidate]})
    review = f"/review/{query['id']}"

    page.goto(base + review)  # anonymous: sent to sign in, then back
    page.wait_for_url(f"**/login?next=%2Freview%2F{query['id']}")
    snap(page, "21-anonymous-sent-to-sign-in")
    assert page.get_by_label("Password").is_visible()

    page.get_by_label("User name").fill("victor")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + review)
    snap(page, "22-viewer-reads-the-review-page")
    assert page.locator("header.top .who").inner_text().startswith("victor (viewer)")
    assert page.locator("h1").count() == 1 and image_loaded(page, "article.candidate img")
    assert page.get_by_role("button", name="Confirm: this is NyalaData_34").count() == 0
    # the form posted by hand (as a crafted page or script would) is refused all the same
    posted = page.evaluate(
        """async (url) => {
             const answer = await fetch(url, { method: "POST", body: new URLSearchParams({
               action: "match", individual_id: "NyalaData_34" }) });
             return [answer.status, await answer.text()];
           }""",
        review,
    )
    assert posted[0] == 403 and "victor is a viewer and may only read" in posted[1]
    page.problems.remove(f"403 {base}{review}")  # the refusal asserted just above
    page.get_by_role("button", name="sign out").click()
    page.wait_for_url("**/login")

    sign_in(page, base, "bob", next=review)
    snap(page, "23-reviewer-review-page")
    page.get_by_role("button", name="Confirm: this is NyalaData_34").click()
    page.wait_for_load_state("networkidle")
    snap(page, "24-reviewer-confirmed")
    with Catalog(catalog_path) as catalog:
        [decision] = catalog.decisions(query_id=query["id"])
        assert (decision["outcome"], decision["individual_id"], decision["reviewer"]) == (
            "match",
            "NyalaData_34",
            "bob",
        )
    assert page.problems == []


def photo_bytes(nyala, image_id: str) -> bytes:
    return Path(nyala.table.loc[nyala.table["image_id"] == image_id, "path"].item()).read_bytes()
