"""The learned fusion rules (gallery/fusion_logistic.py, gallery/fusion_boosted.py) and their
choice on the database (gallery/fusion_choice.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from wildreid.gallery import fusion_choice
from wildreid.gallery.adaptation import MARGIN
from wildreid.gallery.calibration import FUSION_RULES, Calibration, LearnedRule
from wildreid.gallery.fusion_boosted import BoostedRule
from wildreid.gallery.fusion_logistic import LogisticRule
from wildreid.gallery.shortlist import ScoredPairs
from wildreid.local.fusion_settings import FusionSettings
from wildreid.presets import get_preset


def synthetic_pairs(count: int, seed: int):
    """Pairs whose cosine knows who is who, whose inliers know a little, and whose lnbnn is
    the cosine again with noise (a second opinion that adds little)."""
    rng = np.random.default_rng(seed)
    same = (rng.random(count) < 0.2).astype(float)
    cosine = np.where(same == 1, rng.normal(0.7, 0.1, count), rng.normal(0.3, 0.1, count))
    inliers = np.where(same == 1, rng.poisson(14, count), rng.poisson(10, count)).astype(float)
    lnbnn = cosine + rng.normal(0, 0.05, count)
    return {"cosine": cosine, "inliers": inliers, "lnbnn": lnbnn}, same


def log_loss(probability: np.ndarray, same: np.ndarray) -> float:
    p = np.clip(probability, 1e-6, 1 - 1e-6)
    return float(-np.mean(same * np.log(p) + (1 - same) * np.log(1 - p)))


def test_logistic_rule_learns_weights_that_beat_the_mean_on_new_pairs_and_saves_them():
    scores, same = synthetic_pairs(4000, seed=0)
    learned = Calibration.fit(scores, same, fusion="logistic")
    plain = Calibration.fit(scores, same)
    held, truth = synthetic_pairs(4000, seed=1)
    assert log_loss(learned.fuse(held), truth) < log_loss(plain.fuse(held), truth) - 0.02
    full = learned.rule.models["cosine+inliers+lnbnn"]
    weight = dict(zip(full.names, full.coefficients))
    # The noisy copy of the cosine adds little beside it: it weighs less (the mean weighs both alike).
    assert weight["cosine"] > weight["lnbnn"] >= 0
    assert all(w >= 0 for model in learned.rule.models.values() for w in model.coefficients)
    # Saved and loaded with the gallery's calibration: the same P(same), the same rule.
    again = Calibration.from_json(learned.to_json())
    assert again.fusion == "logistic" and isinstance(again.rule, LogisticRule)
    assert np.allclose(again.fuse(held), learned.fuse(held))
    # Two queries have no LNBNN votes: they are fused by the rule fitted without them.
    without = {name: values for name, values in held.items() if name != "lnbnn"}
    expected = again.rule.models["cosine+inliers"].predict(learned.probabilities(without))
    assert np.allclose(learned.fuse(without), expected)


def test_a_higher_score_never_lowers_the_learned_probability():
    scores, same = synthetic_pairs(3000, seed=2)
    calibration = Calibration.fit(scores, same, fusion="logistic")
    grid = np.linspace(0.0, 1.0, 50)
    fixed = {"inliers": np.full(50, 12.0), "lnbnn": np.full(50, 0.5)}
    fused = calibration.fuse({"cosine": grid, **fixed})
    assert np.all(np.diff(fused) >= 0)
    # A weight that comes out negative (a copy of a score, less informative) is dropped, not kept.
    rng = np.random.default_rng(3)
    redundant = {**scores, "matches": scores["cosine"] * 0.5 + rng.normal(0, 0.2, len(same))}
    again = Calibration.fit(redundant, same, fusion="logistic")
    assert all(w >= 0 for model in again.rule.models.values() for w in model.coefficients)


def both_needed(count: int, seed: int):
    """Pairs that are the same animal mostly when both scores are high: one weight per score
    (the logistic rule) cannot say 'only together'; trees can."""
    rng = np.random.default_rng(seed)
    cosine, share = rng.random(count), rng.random(count)
    same = (rng.random(count) < 1 / (1 + np.exp(-(10 * np.minimum(cosine, share) - 6)))).astype(float)
    return {"cosine": cosine, "inliers": np.round(share * 50)}, same


def test_boosted_rule_learns_what_one_weight_per_score_cannot_and_is_saved_as_numbers():
    from sklearn.ensemble import HistGradientBoostingClassifier

    from wildreid.gallery.fusion_logistic import log_odds

    scores, same = both_needed(6000, seed=0)
    held, truth = both_needed(6000, seed=1)
    boosted = Calibration.fit(scores, same, fusion="boosted")
    logistic = Calibration.fit(scores, same, fusion="logistic")
    assert log_loss(boosted.fuse(held), truth) < log_loss(logistic.fuse(held), truth) - 0.01
    # The trees are walked by our own code: the same P(same) as scikit-learn's model.
    names = ["cosine", "inliers"]
    features = np.column_stack([log_odds(boosted.probabilities(scores)[name]) for name in names])
    model = HistGradientBoostingClassifier(monotonic_cst=[1, 1], random_state=0).fit(features, same.astype(int))
    probe = np.column_stack([log_odds(boosted.probabilities(held)[name]) for name in names])
    np.testing.assert_allclose(boosted.fuse(held), model.predict_proba(probe)[:, 1], rtol=0, atol=1e-12)
    # Saved as JSON numbers (no pickle), loaded to the same P(same); the same pairs, the same rule.
    text = boosted.to_json()
    again = Calibration.from_json(text)
    assert again.fusion == "boosted" and isinstance(again.rule, BoostedRule)
    np.testing.assert_array_equal(again.fuse(held), boosted.fuse(held))
    assert Calibration.fit(scores, same, fusion="boosted").to_json() == text
    # A pair scored by the cosine alone is fused by the trees fitted on it alone.
    alone = again.rule.models["cosine"]
    assert alone.names == ["cosine"] and np.allclose(
        again.fuse({"cosine": held["cosine"]}), alone.predict(again.probabilities({"cosine": held["cosine"]}))
    )
    with pytest.raises(ValueError, match="fitted on the scores cosine\\+inliers, not on lnbnn"):
        again.rule({"lnbnn": held["cosine"]})


@pytest.mark.parametrize("rule", ["logistic", "boosted"])
def test_a_rule_asked_for_some_sets_of_scores_fits_only_those_and_fuses_them_alike(rule):
    """The fusion choice's fold calibrations fuse the pairs' own scores and those between queries
    only; fitted for just those, they fuse them exactly as a rule fitted for every subset."""
    scores, same = synthetic_pairs(3000, seed=7)
    held, _ = synthetic_pairs(500, seed=8)
    between = {name: values for name, values in held.items() if name != "lnbnn"}
    asked = [list(scores), list(between), []]
    some = Calibration.fit(scores, same, fusion=rule, asked=asked)
    every = Calibration.fit(scores, same, fusion=rule)
    assert set(some.rule.models) == {"cosine+inliers+lnbnn", "cosine+inliers"}
    assert len(every.rule.models) == 7
    np.testing.assert_array_equal(some.fuse(held), every.fuse(held))
    np.testing.assert_array_equal(some.fuse(between), every.fuse(between))
    with pytest.raises(ValueError, match="refit the gallery"):
        some.fuse({"cosine": held["cosine"]})


def test_a_higher_score_never_lowers_the_boosted_probability():
    scores, same = both_needed(4000, seed=2)
    calibration = Calibration.fit(scores, same, fusion="boosted")
    grid = np.linspace(0.0, 1.0, 200)
    for fixed in (10.0, 25.0, 45.0):
        fused = calibration.fuse({"cosine": grid, "inliers": np.full(200, fixed)})
        assert np.all(np.diff(fused) >= 0)
    counts = np.arange(0.0, 51.0)
    for fixed in (0.2, 0.5, 0.9):
        assert np.all(np.diff(calibration.fuse({"cosine": np.full(51, fixed), "inliers": counts})) >= 0)
    # one class only: the base rate, whatever the scores
    flat = Calibration.fit(scores, np.zeros(len(same)), fusion="boosted")
    assert np.ptp(flat.fuse(scores)) < 1e-12


def test_a_saved_calibration_with_the_mean_has_no_rule_and_loads_as_before():
    scores, same = synthetic_pairs(500, seed=4)
    calibration = Calibration.fit(scores, same)
    assert calibration.rule is None and "rule" not in json.loads(calibration.to_json())


@dataclass
class Memorise(LearnedRule):
    """A test's rule that remembers the exact calibrated scores of every same pair it was fitted
    on: on those pairs it is certain, on any other it says 0. Out of fold it knows nothing."""

    seen: set = field(default_factory=set)

    def fit(self, probabilities, same, asked=None):
        rows = zip(*(probabilities[name].tolist() for name in sorted(probabilities)))
        self.seen = {row for row, label in zip(rows, same) if label == 1}
        return self

    def __call__(self, probabilities):
        rows = zip(*(probabilities[name].tolist() for name in sorted(probabilities)))
        return np.array([1.0 if row in self.seen else 0.0 for row in rows])

    def to_json(self):
        return []

    @classmethod
    def from_json(cls, data):
        return cls()


@pytest.fixture
def memorise():
    FUSION_RULES.register("memorise", Memorise)
    yield
    FUSION_RULES.unregister("memorise")


def animal_cosine_pairs(photos: int, noise: float, seed: int, animals: int = 30):
    """(identities, pseudo-query rows, their cosine pairs with every other photo, same): ``animals``
    animals of ``photos`` noisy unit vectors each, every second photo asked."""
    rng = np.random.default_rng(seed)
    count = animals * photos
    identities = np.repeat([f"animal{k}" for k in range(animals)], photos).astype(object)
    vectors = rng.normal(size=(animals, 8))[np.repeat(np.arange(animals), photos)] + rng.normal(0, noise, (count, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = np.arange(0, count, 2)
    cosine = vectors[rows] @ vectors.T
    queries, images = np.nonzero(rows[:, None] != np.arange(count)[None, :])
    pairs = ScoredPairs(queries, images, {"cosine": cosine[queries, images]}, None)
    same = (identities[rows[queries]] == identities[images]).astype(float)
    return identities, rows, pairs, same


def test_the_rule_is_judged_on_pairs_of_identities_it_never_saw(memorise, monkeypatch):
    """The validation's P(same) of a pair comes from a calibration fitted without the pair's
    identities: a rule that memorises its training pairs scores the held-out pairs at 0, and
    loses to the mean. Fitted on every pair (a leak) it would be certain of each same pair."""
    identities, rows, pairs, same = animal_cosine_pairs(photos=6, noise=0.8, seed=5)
    folds = fusion_choice.identity_folds(identities, 5, 0)

    fused, between = fusion_choice.out_of_fold(pairs, rows, same, folds, "memorise")
    assert fused[same == 1].max() == 0.0 and between[same == 1].max() == 0.0

    calibration, chosen_fused, _, record = fusion_choice.fit_fusion(
        pairs, rows, same, identities, None, setting="auto", top_m_choices=(1,), seed=0, name="test"
    )
    assert record["chosen"] == "mean" and set(record["validation"]) == {"mean", "logistic", "boosted", "memorise"}
    assert calibration.fusion == "mean" and calibration.rule is None

    # The check itself: had the pairs been fused by the rule fitted on all of them, every same
    # pair would have been found with certainty.
    leaked = Calibration.fit(pairs.raw, same, fusion="memorise").fuse(pairs.raw)
    assert leaked[same == 1].min() == 1.0


def test_with_top_m_auto_each_rule_is_judged_at_its_own_best_m():
    """With top_m "auto" the fit chooses m after the rule, so each rule is judged at the m that
    serves it best: its figure is its out-of-fold simulation at that m, the best of every m."""
    from wildreid.decide.thresholds import Neighbours, choose_threshold

    identities, rows, pairs, same = animal_cosine_pairs(photos=8, noise=1.2, seed=2)
    asked = np.zeros(len(identities), dtype=bool)
    asked[rows] = True

    _, _, _, record = fusion_choice.fit_fusion(
        pairs, rows, same, identities, None, setting="auto", top_m_choices=(1, 2, 3), seed=0, name="test"
    )
    folds = fusion_choice.identity_folds(identities, fusion_choice.FOLDS, 0)
    judged_at = {}
    for label, figures in record["validation"].items():
        fused, _ = fusion_choice.out_of_fold(pairs, rows, same, folds, label)
        neighbours = Neighbours.from_pairs(rows[pairs.queries], pairs.images, fused, asked)
        each_m = {m: choose_threshold(neighbours, identities, top_m=m).simulated_score for m in (1, 2, 3)}
        judged_at[label] = figures["top_m"]
        assert figures["simulated_score"] == pytest.approx(each_m[figures["top_m"]])
        assert figures["simulated_score"] >= max(each_m.values()) - 1e-12
    # eight photos per animal, noisy: the mean of several photos wins somewhere, so m=1 alone
    # (the judgement before) would have given other figures
    assert max(judged_at.values()) > 1


def test_a_named_rule_is_used_and_an_unknown_one_is_refused_before_any_work():
    scores, same = synthetic_pairs(200, seed=6)
    pairs = ScoredPairs(np.arange(200) % 20, np.arange(200), scores, None)
    identities = np.array([f"a{k % 40}" for k in range(200)], dtype=object)
    with pytest.raises(ValueError, match="unknown fusion rule 'median'; choose one of mean, logistic, boosted"):
        fusion_choice.fit_fusion(
            pairs, np.arange(20), same, identities, None, setting="median", top_m_choices=(1,), seed=0, name="t"
        )


FUSION = get_preset("fusion").replace(
    local_options={"max_keypoints": 128}, fusion=FusionSettings(shortlist=5), fusion_rule="auto"
)


def test_auto_chooses_a_rule_on_real_photos_records_it_and_the_gallery_answers_with_it(lions, lite0_backbone, tmp_path):
    """On LionData photos: the mean and the learned rule are compared on held-out identities, the
    choice and its figures are in the gallery's fit, its notes and run.json; a saved and loaded
    gallery fuses with the same rule."""
    from wildreid.data.dataset import Dataset
    from wildreid.evaluate.outputs import write_run
    from wildreid.gallery.gallery import Gallery

    database = lions[lions["split"] == "database"].reset_index(drop=True)
    cache = tmp_path / "cache"
    gallery = Gallery.build(database, FUSION, backbone=lite0_backbone, cache_dir=cache, progress=False)
    fit = gallery.groups["LionData"].fit
    record = fit.fusion_rule
    assert set(record["validation"]) == {"mean", "logistic", "boosted"}
    scores = {rule: figures["simulated_score"] for rule, figures in record["validation"].items()}
    learned = {"logistic": LogisticRule, "boosted": BoostedRule}
    if record["chosen"] in learned:
        assert scores[record["chosen"]] >= scores["mean"] + MARGIN
        assert isinstance(fit.calibration.rule, learned[record["chosen"]])
    else:
        assert max(scores.values()) < scores["mean"] + MARGIN and fit.calibration.rule is None
    assert any(note.startswith(f"LionData: fusion rule {record['chosen']} ") for note in gallery.notes)

    gallery.save(tmp_path / "gallery")
    loaded = Gallery.load(tmp_path / "gallery")
    probe = {"cosine": np.array([0.2, 0.6]), "lnbnn": np.array([0.0, 3.0]), "inliers": np.array([4.0, 40.0])}
    assert np.allclose(loaded.groups["LionData"].fit.calibration.fuse(probe), fit.calibration.fuse(probe))
    assert loaded.groups["LionData"].fit.fusion_rule["chosen"] == record["chosen"]

    queries = Dataset(lions[lions["split"] == "query"].head(6).assign(split="query"), "lions")
    result = loaded.identify(queries, cache_dir=cache, progress=False)
    write_run(result, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["fusion_rules"]["LionData"]["chosen"] == record["chosen"]
    assert saved["preset"]["fusion_rule"] == "auto"


@pytest.mark.parametrize("informative", [False, True], ids=["noise", "informative"])
def test_the_backbone_cosine_is_kept_only_where_the_validation_says_it_helps(informative):
    """'auto' judges every rule without the backbone's cosine, then with it. Pure noise is left out
    (the calibration has no map for it, and fusing pairs that carry it ignores it); a second
    cosine that tells the individuals apart where the first hardly does is kept."""
    rng = np.random.default_rng(8)
    identities = np.repeat([f"animal{k}" for k in range(30)], 6).astype(object)
    centres = rng.normal(size=(30, 8))[np.repeat(np.arange(30), 6)]

    def cosines(spread):
        vectors = centres + rng.normal(0, spread, (180, 8))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors @ vectors.T

    rows = np.arange(0, 180, 2)
    weak = cosines(3.0)[rows]
    second = cosines(0.5)[rows] if informative else rng.uniform(-1, 1, weak.shape)
    queries, images = np.nonzero(rows[:, None] != np.arange(180)[None, :])
    raw = {"cosine": weak[queries, images], "backbone_cosine": second[queries, images]}
    pairs = ScoredPairs(queries, images, raw, None)
    same = (identities[rows[queries]] == identities[images]).astype(float)

    calibration, fused, _, record = fusion_choice.fit_fusion(
        pairs, rows, same, identities, None, setting="auto", top_m_choices=(1,), seed=0, name="test"
    )
    order = [f"{rule}{optional}" for rule in ("mean", "logistic", "boosted") for optional in ("", "+backbone_cosine")]
    assert list(record["validation"]) == order
    scores = {label: figures["simulated_score"] for label, figures in record["validation"].items()}
    kept = "backbone_cosine" in record["scores"]
    assert kept == informative
    assert ("backbone_cosine" in calibration.maps) == kept
    # the simplest candidate (in the order above) within MARGIN of the best
    label = record["chosen"] + ("+backbone_cosine" if kept else "")
    best = max(scores.values())
    assert scores[label] >= best - MARGIN
    assert all(scores[earlier] < best - MARGIN for earlier in order[: order.index(label)])
    if not kept:
        np.testing.assert_array_equal(calibration.fuse(raw), calibration.fuse({"cosine": raw["cosine"]}))


def test_a_named_rule_keeps_every_score_and_a_rule_that_cannot_be_judged_leaves_the_optional_one_out():
    """A preset that names a rule gets it with all the scores it names (the four candidates are
    only reported); 'auto' with too few identities to judge anything keeps today's mean and
    leaves the backbone's cosine out, since nothing showed that it helps."""
    rng = np.random.default_rng(9)
    identities = np.repeat([f"animal{k}" for k in range(30)], 6).astype(object)
    rows = np.arange(0, 180, 2)
    queries, images = np.nonzero(rows[:, None] != np.arange(180)[None, :])
    same = (identities[rows[queries]] == identities[images]).astype(float)
    raw = {"cosine": same + rng.normal(0, 1, len(same)), "backbone_cosine": rng.uniform(-1, 1, len(same))}
    pairs = ScoredPairs(queries, images, raw, None)

    calibration, _, _, record = fusion_choice.fit_fusion(
        pairs, rows, same, identities, None, setting="logistic", top_m_choices=(1,), seed=0, name="named"
    )
    assert record["chosen"] == "logistic" and record["scores"] == ["cosine", "backbone_cosine"]
    assert set(record["validation"]) == {"mean", "mean+backbone_cosine", "logistic", "logistic+backbone_cosine"}
    assert isinstance(calibration.rule, LogisticRule) and "backbone_cosine" in calibration.maps

    few = np.where(np.isin(identities, ["animal0", "animal1", "animal2"]), identities, "alone").astype(object)
    few[np.flatnonzero(few == "alone")] = [f"single{k}" for k in range(int((few == "alone").sum()))]
    calibration, _, _, record = fusion_choice.fit_fusion(
        pairs, rows, same, few, None, setting="auto", top_m_choices=(1,), seed=0, name="few"
    )
    assert record["chosen"] == "mean" and record["scores"] == ["cosine"] and "too few" in record["note"]
    assert set(calibration.maps) == {"cosine"}


def test_the_backbone_cosine_needs_the_cosine_beside_it():
    with pytest.raises(ValueError, match="backbone_cosine is a second opinion beside the adapted cosine; add cosine"):
        FusionSettings(scores=("backbone_cosine", "inliers"))
