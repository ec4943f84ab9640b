"""The review page's keypoint picture shows the evidence on the animal (issue 21: on nyala photos
the lines joined ground, shadows and hooves) and says when that evidence is weak."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image

from wildreid.data.images import decode_image, read_image_bytes
from wildreid.data.regions import Region, upright_size
from wildreid.describe.foreground import cam_maps, map_mask
from wildreid.evaluate.pictures import WEAK_EVIDENCE, Animal, animal_matches, draw_animal_matches, region_animal
from wildreid.local.base import get_method
from wildreid.presets import get_preset
from wildreid.web.matches import known_evidence, match_picture

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Two photos of NyalaData_26 taken at one waterhole: RootSIFT's whole-photo verification keeps
# about 90 matches, nearly all on the shared ground and bank, a handful on the animal.
PAIR = ("000033.jpg", "000034.jpg")


@pytest.fixture(scope="module")
def pair(shared_data):
    paths = [str(shared_data / "NyalaData" / "images" / name) for name in PAIR]
    return paths, [decode_image(read_image_bytes(path), path) for path in paths]


@pytest.fixture(scope="module")
def foregrounds(pair, tmp_path_factory):
    maps, _, _ = cam_maps(pair[0], cache_dir=tmp_path_factory.mktemp("cam"))
    return [Animal(map_mask(cam), "foreground") for cam in maps]


def test_lines_off_the_animal_are_not_drawn_as_evidence(pair, foregrounds):
    (query, candidate), method = pair[1], get_method("rootsift")
    pa, pb, evidence, faint = animal_matches(query, candidate, method, *foregrounds)
    inside = foregrounds[0].contains(pa, query.width, query.height) & foregrounds[1].contains(
        pb, candidate.width, candidate.height
    )
    assert inside[evidence].all()  # every line drawn as evidence has both ends on the animals
    assert not (evidence & ~inside).any() and not (faint & inside).any()
    whole = draw_animal_matches(query, candidate, method, None, None)[1]  # what the old picture counted
    _, on_animal = draw_animal_matches(query, candidate, method, *foregrounds)
    assert whole.on_animal >= 50 and not whole.animal_found and "no animal found" in whole.text()
    assert on_animal.on_animal == evidence.sum() < WEAK_EVIDENCE <= whole.on_animal
    assert on_animal.off_animal == faint.sum() > 0  # drawn faint, not counted
    assert on_animal.weak and on_animal.text() == f"{on_animal.on_animal} matches on the animal - weak evidence"


def test_the_photos_own_region_is_the_animal(pair, monkeypatch):
    (paths, (query, candidate)), method = pair, get_method("rootsift")
    monkeypatch.setattr("wildreid.describe.foreground._model", _no_model)  # a region: no foreground
    animals = []
    for path, image in zip(paths, (query, candidate)):
        data = read_image_bytes(path)
        width, height = upright_size(data)
        animals.append((data, image, width, height))
    everything = [region_animal(d, i, Region((0, 0, w, h), margin=0.0)) for d, i, w, h in animals]
    corner = [region_animal(d, i, Region((0, 0, 3, 3))) for d, i, w, h in animals]  # no keypoint there
    assert everything[0].source == "region" and everything[0].mask.all() and not corner[0].mask[-1].any()
    whole = draw_animal_matches(query, candidate, method, None, None)[1].on_animal
    assert draw_animal_matches(query, candidate, method, *everything)[1].on_animal == whole
    assert draw_animal_matches(query, candidate, method, *corner)[1].on_animal == 0
    # through the app's function, a region given for each photo is used as it is
    region = Region((0, 0, *upright_size(animals[0][0])), margin=0.0)
    drawn = match_picture(*paths, preset=get_preset("fusion"), query_region=region, candidate_region=region)
    assert drawn is not None and drawn.evidence.startswith(f"{whole} matches on the animal")


def test_the_label_counts_the_matches_on_the_animal_and_the_foreground_is_cached(pair, tmp_path, monkeypatch):
    paths, preset = pair[0], get_preset("fusion")
    drawn = match_picture(*paths, preset=preset, cache_dir=tmp_path)
    assert drawn is not None
    count = int(re.fullmatch(r"(\d+) matches on the animal — weak evidence", drawn.evidence)[1])
    assert count < WEAK_EVIDENCE
    assert Image.open(io.BytesIO(drawn.png)).width > 600  # both whole photos
    assert known_evidence(*paths, preset=preset, cache_dir=tmp_path) == drawn.evidence  # for the page
    assert known_evidence(*reversed(paths), preset=preset, cache_dir=tmp_path) is None  # not drawn yet
    # The other way round is a new picture, but each photo's foreground comes from the cache.
    monkeypatch.setattr("wildreid.describe.foreground._model", _no_model)
    reverse = match_picture(*reversed(paths), preset=preset, cache_dir=tmp_path)
    assert reverse is not None and reverse.evidence.endswith("weak evidence")
    again = match_picture(*paths, preset=preset, cache_dir=tmp_path)
    assert again == drawn  # the picture and its words from the cache


def _no_model(device):
    raise AssertionError("the foreground was computed again")


def test_strong_evidence_is_not_called_weak():
    from wildreid.evaluate.pictures import Evidence

    assert Evidence(WEAK_EVIDENCE, 0).text("—") == f"{WEAK_EVIDENCE} matches on the animal"
    assert Evidence(1, 3).text("—") == "1 match on the animal — weak evidence"
    assert Evidence(0, 0, animal_found=False).text() == "0 matches (no animal found: whole photos) - weak evidence"
