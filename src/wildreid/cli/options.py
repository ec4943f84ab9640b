"""Options that several commands share, each declared once, and the groups they form.

A group (an :class:`~wildreid.cli.app.OptionGroup`) is taken by a command as one parameter and
spread into its options on the command line; its methods turn the options into settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from wildreid.cli.app import OptionGroup, console
from wildreid.describe.adapters import adapter_names
from wildreid.local.base import LEARNED, method_names
from wildreid.presets import PRESETS, evidence_changes, region_changes, speed_changes

if TYPE_CHECKING:
    from wildreid.data.dataset import Dataset

# --------------------------------------------------------------------------------------------
# How a dataset is read

DatasetRoot = Annotated[Path, typer.Argument(help="metadata.csv, a folder holding it, or a folder per identity.")]
QueryDir = Annotated[
    Optional[Path],
    typer.Option(help="Folder of query images; ROOT is then a folder with one sub-folder of photos per identity."),
]
PathColumn = Annotated[str, typer.Option(help="CSV column with image paths (relative to the CSV's folder).")]
IdentityColumn = Annotated[str, typer.Option(help="CSV column with identities (empty for unknown queries).")]
SplitColumn = Annotated[str, typer.Option(help="CSV column saying 'database' or 'query'.")]
DatasetColumn = Annotated[
    str, typer.Option(help="CSV column grouping images into datasets; without it, the dataset is the folder name.")
]
ImageIdColumn = Annotated[str, typer.Option(help="CSV column with image ids (default: the row number).")]
DatabaseValue = Annotated[str, typer.Option(help="Value of the split column that marks database images.")]
QueryValue = Annotated[str, typer.Option(help="Value of the split column that marks queries.")]
AllowOutsidePaths = Annotated[
    bool,
    typer.Option(
        "--allow-outside-paths",
        help="Read images outside the dataset's folder too (refused by default, so that "
        "a metadata file cannot point wildreid at other files).",
    ),
]


@dataclass(frozen=True)
class DatasetColumns(OptionGroup):
    """How a dataset's metadata CSV (or folder per identity) is read."""

    query_dir: QueryDir = None
    path_column: PathColumn = "path"
    identity_column: IdentityColumn = "identity"
    split_column: SplitColumn = "split"
    dataset_column: DatasetColumn = "dataset"
    image_id_column: ImageIdColumn = "image_id"
    database_value: DatabaseValue = "database"
    query_value: QueryValue = "query"

    def load(self, root: Path, *, allow_outside_paths: bool = False, **checks) -> Dataset:
        from wildreid.data.dataset import load_dataset

        return load_dataset(root, **asdict(self), allow_outside_paths=allow_outside_paths, **checks)


@dataclass(frozen=True)
class LabelledColumns(OptionGroup):
    """How the labelled photos of a metadata CSV are read (its database rows)."""

    path_column: PathColumn = "path"
    identity_column: IdentityColumn = "identity"
    split_column: SplitColumn = "split"
    dataset_column: DatasetColumn = "dataset"
    image_id_column: ImageIdColumn = "image_id"
    database_value: DatabaseValue = "database"

    def labelled_photos(self, root: Path, *, allow_outside_paths: bool, include_queries: bool):
        """The labelled photos of ROOT: database rows of a metadata CSV (and labelled queries if
        asked), or every photo of a folder-per-identity layout."""
        from wildreid.data.dataset import DATABASE, load_folders

        if root.is_dir() and not (root / "metadata.csv").is_file():
            return load_folders(root, None, allow_outside_paths=allow_outside_paths).table
        dataset = DatasetColumns(**asdict(self)).load(root, allow_outside_paths=allow_outside_paths)
        table = dataset.table
        keep = table["split"] == DATABASE
        if include_queries:
            keep |= table["identity"].notna()
        return table[keep]


# --------------------------------------------------------------------------------------------
# Options of many commands

RunOut = Annotated[Path, typer.Option(help="Output folder: submission.csv, candidates.csv, report.html, run.json.")]
TopK = Annotated[Optional[int], typer.Option(help="Candidates kept per query in candidates.csv.")]
Report = Annotated[bool, typer.Option(help="Write report.html and plots.")]
CacheDir = Annotated[
    Optional[Path], typer.Option(help="Where embeddings are cached (default $WILDREID_CACHE or ~/.cache/wildreid).")
]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the embedding cache.")]
Device = Annotated[Optional[str], typer.Option(help="'cpu', 'cuda', 'cuda:1'... (default: a GPU if there is one).")]
PresetOption = Annotated[str, typer.Option(help=f"Named configuration: {', '.join(PRESETS)}. See `wildreid presets`.")]
BackboneOption = Annotated[
    Optional[str],
    typer.Option(
        help="Override the preset's descriptor: a short name (megadescriptor-l-384, efficientnet-lite0, ...), "
        "any timm name, hf-hub:ORG/NAME, or local-dir:FOLDER."
    ),
]
LocalOption = Annotated[
    Optional[str],
    typer.Option(
        help=f"Override the preset's local keypoint matcher: {', '.join(method_names())}, or 'none' (global "
        f"descriptor only); {' and '.join(LEARNED)} (ALIKED/DISK + LightGlue) read their weights from disk only, "
        "see README. Its scores are calibrated and fused as the preset's fusion settings say."
    ),
]
GalleryOption = Annotated[
    Optional[Path],
    typer.Option(
        help="A gallery from `wildreid gallery build`: ROOT... are then query photos (files, folders, or CSVs "
        "with a path column) identified against it, without refitting anything."
    ),
]
DatasetName = Annotated[
    Optional[str],
    typer.Option(
        "--dataset",
        help="With --gallery: the dataset the query photos belong to (needed when the gallery holds several "
        "and the queries carry no dataset column).",
    ),
]


# --------------------------------------------------------------------------------------------
# Extraction speed

Fast = Annotated[
    bool,
    typer.Option(
        "--fast",
        help="Every extraction speed option on (precision, decoding, compile, engine, batch size: "
        "auto). Features agree with the exact path to cosine >= 0.999 (checked on the first "
        "batch, else it falls back to exact fp32); they are cached apart from exact ones.",
    ),
]
Precision = Annotated[Optional[str], typer.Option(help="Extraction precision: fp32 (exact), bf16, fp16 or auto.")]
Decode = Annotated[
    Optional[str],
    typer.Option(
        help="Image decoding: exact (PIL, the reference), fast (PIL at reduced JPEG scale), device "
        "(nvJPEG on a GPU, torchvision on a CPU) or auto."
    ),
]
Compile = Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model.")]
Engine = Annotated[Optional[str], typer.Option(help="Model engine: torch, onnxruntime (CPU only) or auto.")]
BatchSize = Annotated[Optional[str], typer.Option(help="Images per forward pass, or 'auto' (from free GPU memory).")]


@dataclass(frozen=True)
class SpeedOptions(OptionGroup):
    """How fast the descriptors are extracted (--batch-size is an option of its own)."""

    fast: Fast = False
    precision: Precision = None
    decode: Decode = None
    compile: Compile = None
    engine: Engine = None

    def changes(self, batch_size: str | None) -> dict:
        return speed_changes(self.fast, self.precision, self.decode, self.compile, self.engine, batch_size)


# --------------------------------------------------------------------------------------------
# Regions: MegaDetector's animals, margins, foreground

DetectionsOption = Annotated[
    Optional[Path],
    typer.Option(
        "--detections",
        help="MegaDetector results for these photos (its batch-output JSON, as AddaxAI/EcoAssist write it): "
        "each animal above --detection-threshold becomes its own row, id IMAGE_ID#K, described by its box; "
        "photos without one are reported (no_animal.csv). See docs/regions.md.",
    ),
]
DetectionThreshold = Annotated[
    Optional[float],
    typer.Option(
        help="Lowest MegaDetector confidence of an animal that is used (default 0.2, MegaDetector v5's "
        "typical threshold). Needs --detections."
    ),
]
RegionMargin = Annotated[
    Optional[float],
    typer.Option(
        help="Margin added around every region's box (metadata bbox/segmentation, detections, foreground), "
        "as a fraction of its width and height (default: the preset's, 0.1)."
    ),
]
ForegroundOption = Annotated[
    Optional[str],
    typer.Option(
        help="Automatic foreground for photos without a region: 'cam' (a box from the class-activation map "
        "of the offline ImageNet classifier), 'cam-mask' (that box and the map's outline as a mask) or "
        "'none' (the whole photo). Default: the preset's (none). See docs/regions.md."
    ),
]


@dataclass(frozen=True)
class RegionOptions(OptionGroup):
    """Which part of each photo is described."""

    detections: DetectionsOption = None
    detection_threshold: DetectionThreshold = None
    region_margin: RegionMargin = None
    foreground: ForegroundOption = None

    def changes(self) -> dict:
        return region_changes(self.region_margin, self.foreground)

    def animals(self, table, *, labelled: bool):
        """With --detections: (one row per animal, the photos without one), and what MegaDetector
        found said; else (table, None)."""
        if self.detections is None:
            if self.detection_threshold is not None:
                raise ValueError("--detection-threshold applies to MegaDetector results: give them with --detections.")
            return table, None
        from wildreid.data.detections import animals_in

        rows, no_animal, threshold = animals_in(table, self.detections, self.detection_threshold)
        _say_what_megadetector_found(self.detections, table, rows, no_animal, threshold, labelled=labelled)
        return rows, no_animal


def _say_what_megadetector_found(results: Path, table, rows, no_animal, threshold: float, *, labelled: bool):
    from wildreid.data.detections import DETECTION, labelled_photos_with_several_animals

    photos = len(table) - len(no_animal)
    console.print(
        f"MegaDetector ({results.name}): {len(rows)} animal(s) at or above {threshold:g} in {photos} of "
        f"{len(table)} photo(s); {len(no_animal)} photo(s) without one are left out.",
        highlight=False,
    )
    for item in no_animal.head(10).itertuples():
        console.print(f"[yellow]no animal[/] {escape(str(item.image_id))}: {escape(item.reason)}", highlight=False)
    if len(no_animal) > 10:
        console.print(f"[yellow]... and {len(no_animal) - 10} more[/]")
    several = labelled_photos_with_several_animals(rows) if labelled and len(rows) else 0
    if several:
        console.print(
            f"[yellow]{several} labelled photo(s) hold several animals: each animal got the photo's identity. "
            f"Check them (column '{DETECTION}' numbers the animals), or raise --detection-threshold.[/]"
        )


# --------------------------------------------------------------------------------------------
# Viewpoints and the evidence of a match

ViewsOption = Annotated[
    Optional[str],
    typer.Option(
        "--views",
        help="Compare only compatible viewpoints (the 'viewpoint' or 'orientation' column): 'same' (equal "
        "views), compatible pairs 'left=front,right=front', a CSV file of pairs, or 'off'. A photo of "
        "unknown view is compatible with all. Default: the preset's.",
    ),
]
MirrorOption = Annotated[
    Optional[bool],
    typer.Option(
        "--mirror/--no-mirror",
        help="Also compare a view with its mirror view (left/right) after flipping the photo, for species "
        "whose two sides look alike. Needs --views.",
    ),
]
ExtraLocalOption = Annotated[
    Optional[str],
    typer.Option(
        "--extra-local",
        help="More local features fused as their own calibrated inlier counts, comma-separated "
        f"({', '.join(method_names())}; e.g. orb), or 'none'. Default: the preset's.",
    ),
]
TopMOption = Annotated[
    Optional[str],
    typer.Option(
        "--top-m",
        help="Score an identity by the mean of its m best photos (1: its best photo), or 'auto' (the m "
        "whose simulated open-set score on the database is best).",
    ),
]

AdaptOption = Annotated[
    Optional[str],
    typer.Option(
        "--adapt",
        help="Adapt the descriptor to each dataset from its labels when the gallery is fitted: 'none', "
        f"a level ({', '.join(adapter_names())}), or 'auto' (a level only where validation on the "
        "database, holding out whole individuals, says it helps). Default: the preset's.",
    ),
]

FusionRuleOption = Annotated[
    Optional[str],
    typer.Option(
        "--fusion-rule",
        help="How a pair's calibrated scores combine into one P(same) when the gallery is fitted: "
        "'mean' (WildFusion's), 'logistic' (weights learned from the database's labels), 'boosted' "
        "(gradient-boosted trees learned from them), or 'auto' "
        "(the learned rule only where validation on the database, holding out whole individuals, "
        "says it helps). Default: the preset's.",
    ),
]


@dataclass(frozen=True)
class EvidenceOptions(OptionGroup):
    """Which photos are compared, and what counts as evidence that two show one animal."""

    views: ViewsOption = None
    mirror: MirrorOption = None
    extra_local: ExtraLocalOption = None
    top_m: TopMOption = None
    adapt: AdaptOption = None
    fusion_rule: FusionRuleOption = None

    def changes(self) -> dict:
        changes = evidence_changes(self.views, self.mirror, self.extra_local, self.top_m, self.adapt)
        if self.fusion_rule is not None:
            changes["fusion_rule"] = self.fusion_rule.strip().lower()
        return changes
