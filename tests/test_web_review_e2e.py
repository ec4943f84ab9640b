"""Review as groups, end to end in a real headless browser (Playwright driving Debian's Chromium,
as test_web_e2e.py): six photos of two animals the catalogue does not know are uploaded, proposed
as two groups, one pair question is answered, a group is confirmed as a new individual, and that
is undone. Screenshots go to test-artifacts/e2e/review/.

The two animals: NyalaData_71 and NyalaData_47, three photos each. Against this very catalogue
(the 8 individuals x 5 photos of test_web*.py) and the offline preset, every 3-photo subset of 12
nyala outside it whose photos group together at all was grouped alone (11 subsets of NyalaData_71
and 11 of NyalaData_47 come out as one new animal), then in pairs of subsets of two animals: of
the 121 pairs of 71 and 47 subsets, 100 come out as exactly two groups of three, neither linked to
a known individual; the subsets used here do so in 10 and 11 of their 11 pairings.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from live_web import build_catalogue, chromium, serving, sign_in, watched_page

from wildreid.catalog.photos import content_hash
from wildreid.catalog.store import Catalog
from wildreid.data.dataset import load_dataset
from wildreid.web.app import create_app
from wildreid.web.config import WebConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "e2e" / "review"
CHROMIUM = os.environ.get("WILDREID_CHROMIUM", "/usr/bin/chromium")
ANIMALS = {"NyalaData_71": ["408", "411", "413"], "NyalaData_47": ["137", "138", "140"]}


@pytest.fixture(scope="module")
def server(shared_data, lite0_backbone, tmp_path_factory):
    """A 40-photo catalogue served on 127.0.0.1; yields (base URL, catalogue path, dataset)."""
    nyala = load_dataset(shared_data / "NyalaData")
    cache = tmp_path_factory.getbasetemp() / "wildreid-embedding-cache"  # shared with test_web*.py
    path = build_catalogue(tmp_path_factory.mktemp("e2e-review") / "catalog.sqlite", nyala, lite0_backbone, cache)
    app = create_app(WebConfig(path, cache_dir=cache), backbone=lite0_backbone)
    with serving(app) as base:
        yield base, path, nyala


@pytest.fixture(scope="module")
def page(server):
    with chromium(CHROMIUM, ARTIFACTS) as browser, watched_page(browser) as tab:
        yield tab


def snap(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def shown_groups(page) -> list[set[str]]:
    """The proposed groups of several photos, each as the set of its photos' content hashes."""
    groups = []
    for section in page.locator("section.group").all():
        sources = section.locator("li[data-query] img").evaluate_all("images => images.map((i) => i.src)")
        groups.append({source.rsplit("/", 1)[-1] for source in sources})
    return groups


def test_reviewer_confirms_a_group_as_a_new_individual_and_undoes_it(server, page):
    base, catalog_path, nyala = server
    paths = {
        name: [Path(nyala.table.loc[nyala.table["image_id"] == i, "path"].item()) for i in ids]
        for name, ids in ANIMALS.items()
    }
    truth = [{content_hash(p.read_bytes()) for p in photos} for photos in paths.values()]

    sign_in(page, base, "alice")
    page.set_input_files("#photos", [str(p) for photos in paths.values() for p in photos])
    assert "6 chosen" in page.locator("#chosen").inner_text()
    snap(page, "01-upload")
    page.locator("#upload-button").click()
    page.wait_for_url("**/jobs/**")
    snap(page, "02-job")

    # identified, then grouped: the job page moves on to the proposed groups
    page.wait_for_url("**/groups?dataset=NyalaData", timeout=120_000)
    page.wait_for_load_state("networkidle")
    snap(page, "03-groups")
    page.screenshot(path=str(ARTIFACTS / "03-groups-viewport.png"))
    assert sorted(map(sorted, shown_groups(page))) == sorted(map(sorted, truth))
    assert page.locator("section.group h2").all_inner_texts() == ["These 3 photos look like one new animal"] * 2
    assert page.locator('[data-counter="waiting"]').inner_text() == "6"

    # one pair question, answered from the truth
    page.locator("#questions-link").click()
    page.wait_for_url("**/pairs?dataset=NyalaData")
    page.wait_for_load_state("networkidle")
    snap(page, "04-question")
    photos = page.locator("#question .pair img").evaluate_all("images => images.map((i) => i.src.split('/').pop())")
    assert len(photos) == 2
    same = any(set(photos) <= animal for animal in truth)
    about = sum(len(animal) for animal in truth if animal & set(photos))  # the photos of the groups asked about
    page.get_by_role("button", name="Same animal" if same else "Different animals").click()
    page.wait_for_url("**/pairs?dataset=NyalaData&answered=*")
    assert page.locator("#saved").inner_text().startswith("Saved: query #")
    assert page.locator('[data-counter="per-answer"]').inner_text() == f"{about}.0"
    snap(page, "05-answered")

    # the first group confirmed as a new individual, in one action
    page.get_by_role("link", name="Back to the groups").click()
    page.wait_for_url("**/groups?dataset=NyalaData")
    assert sorted(map(sorted, shown_groups(page))) == sorted(map(sorted, truth))  # a true answer keeps them
    first = page.locator("section.group").first
    confirmed = shown_groups(page)[0]
    first.get_by_label("Name").fill("Stripes")
    first.get_by_role("button", name="Confirm as a new individual").click()
    page.wait_for_url("**/groups?dataset=NyalaData&done=*")
    page.wait_for_load_state("networkidle")
    snap(page, "06-confirmed")
    assert (
        "Saved: 3 photos" in page.locator("#saved").inner_text()
        and "NyalaData_new0001" in page.locator("#saved").inner_text()
    )
    assert shown_groups(page) == [next(animal for animal in truth if animal != confirmed)]
    with Catalog(catalog_path) as catalog:
        assert {image["sha256"] for image in catalog.images("NyalaData_new0001")} == confirmed

    # undo: the photos are waiting again, the individual is gone, the two groups are back
    page.locator("#saved + form.undo button, form.undo button").first.click()
    page.wait_for_url("**/groups?dataset=NyalaData&undone=*", timeout=120_000)  # via the regrouping job
    page.wait_for_load_state("networkidle")
    snap(page, "07-undone")
    assert page.locator("#undone").inner_text().startswith("Undone: 3 photos")
    assert sorted(map(sorted, shown_groups(page))) == sorted(map(sorted, truth))
    with Catalog(catalog_path) as catalog:
        assert catalog.individual("NyalaData_new0001") is None
        assert len(catalog.queries(status="ready")) == 6
        assert [entry["action"] for entry in catalog.history()] == ["confirm_group", "answer"]
        assert catalog.history()[0]["undone_by"] == "alice"
    page.goto(base + "/history")
    snap(page, "08-history")
    assert page.problems == []
