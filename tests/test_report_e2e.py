"""The run's report.html as a colleague opens it, in a real headless browser (Playwright driving
Debian's Chromium, as test_web_e2e.py): the summary line and the run's notes on top, the figures
explained, every query's photo and its candidates' photos loading from the run folder, and the
same after the project folder (photos and runs together) is moved. Screenshots go to
test-artifacts/e2e-report/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from live_web import chromium, watched_page
from test_outputs import small_lion_folder

from wildreid.data.dataset import load_dataset
from wildreid.evaluate.outputs import evaluate_if_possible, write_run
from wildreid.gallery.pipeline import identify
from wildreid.presets import get_preset

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "e2e-report"
CHROMIUM = os.environ.get("WILDREID_CHROMIUM", "/usr/bin/chromium")


def _all_thumbnails_load(page) -> tuple[int, int]:
    """(pictures, pictures loaded) among the report's photo links, lazy ones forced to load."""
    page.evaluate("document.querySelectorAll('img.thumb').forEach(img => { img.loading = 'eager'; })")
    page.wait_for_function(
        "Array.from(document.querySelectorAll('img.thumb')).every(img => img.complete)", timeout=30_000
    )
    return page.evaluate(
        "[document.querySelectorAll('img.thumb').length,"
        " Array.from(document.querySelectorAll('img.thumb')).filter(img => img.naturalWidth > 0).length]"
    )


def test_a_colleague_opens_the_report_and_sees_every_photo(shared_data, lite0_backbone, tmp_path):
    project = tmp_path / "project"
    folder = small_lion_folder(shared_data, project / "data" / "Lions")
    result = identify(
        load_dataset(folder),
        get_preset("offline").replace(adapt="none"),
        backbone=lite0_backbone,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    write_run(result, project / "runs" / "first", evaluation=evaluate_if_possible(result))
    moved = tmp_path / "elsewhere" / "project"
    with chromium(CHROMIUM, ARTIFACTS) as browser, watched_page(browser) as page:
        page.goto((project / "runs" / "first" / "report.html").as_uri())
        summary = page.locator("p", has_text="photos:").first.inner_text()
        assert summary.startswith(f"{len(result.candidates)} photos: ")
        assert "rest on little" in page.locator("ul.notes").inner_text()  # six lions: the guard rail
        assert not page.locator("details dl").is_visible()
        page.locator("details summary").click()  # what the figures mean, folded by default
        assert "balanced accuracy on known individuals" in page.locator("details dl").inner_text()
        shown, loaded = _all_thumbnails_load(page)
        assert shown >= 2 * len(result.candidates) and loaded == shown
        page.locator("#queries").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "01-report.png"), full_page=True)
        assert page.problems == []

        # the project folder moved as a whole (to a colleague's disk): the links still hold
        moved.parent.mkdir(parents=True)
        shutil.move(project, moved)
        page.goto((moved / "runs" / "first" / "report.html").as_uri())
        shown, loaded = _all_thumbnails_load(page)
        assert loaded == shown > 0
        page.screenshot(path=str(ARTIFACTS / "02-report-moved.png"))
