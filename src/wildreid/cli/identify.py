"""`wildreid identify` (a dataset, or photos against a saved gallery) and `wildreid demo`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from wildreid.cli.app import OptionGroup, app, console, print_columns, print_legend, stdout, user_cache_dir
from wildreid.cli.options import (
    AllowOutsidePaths,
    BackboneOption,
    BatchSize,
    CacheDir,
    DatasetColumns,
    DatasetName,
    Device,
    EvidenceOptions,
    GalleryOption,
    LocalOption,
    NoCache,
    PresetOption,
    RegionOptions,
    Report,
    RunOut,
    SpeedOptions,
    TopK,
)
from wildreid.decide.cluster import METHODS as LINKAGES
from wildreid.evaluate.meanings import METRICS, NOT_MEASURABLE, figure_text, shown_metrics, unmeasurable_new
from wildreid.presets import (
    DEFAULT_PRESET,
    PRESETS,
    Preset,
    check_threshold_setting,
    check_top_k,
    customised_preset,
    parse_threshold,
)

Roots = Annotated[
    list[Path],
    typer.Argument(
        help="metadata.csv, a folder holding it, or a folder per identity; with --gallery: query photos, "
        "folders of them, or CSVs of paths."
    ),
]
RunPreset = Annotated[
    Optional[str],
    typer.Option(
        help=f"Named configuration: {', '.join(PRESETS)} (default {DEFAULT_PRESET}; with --gallery, the "
        "gallery's). See `wildreid presets`."
    ),
]
Threshold = Annotated[
    Optional[str],
    typer.Option(
        help="Override the preset's threshold: a number, NAME=VALUE,... per dataset, 'auto' (chosen on "
        "the database by simulating new individuals), or 'none' (closed set)."
    ),
]
AllDatasets = Annotated[
    bool,
    typer.Option("--all-datasets", help="Compare queries with every database image, not only their own dataset's."),
]
Grouping = Annotated[
    Optional[str],
    typer.Option(
        help="Group the queries with each other and with known individuals (groups.csv): "
        f"{', '.join(repr(method) for method in LINKAGES)} linkage ({Preset.grouping!r} is the presets' "
        "default), or 'none' (each query decided alone)."
    ),
]
SubmissionFormat = Annotated[
    str,
    typer.Option(
        "--format",
        help="submission.csv as AnimalCLEF2025 wants it (image_id,identity) or AnimalCLEF2026 (image_id,cluster).",
    ),
]


KEEP = object()  # an option not given: the preset's own setting stays


def grouping_option(text: str | None):
    """--grouping: KEEP when absent, None for 'none', else a linkage method."""
    if text is None:
        return KEEP
    lowered = text.strip().lower()
    if lowered == "none":
        return None
    if lowered not in LINKAGES:
        raise ValueError(f"--grouping {text}: choose one of {', '.join(LINKAGES)} or none.")
    return lowered


@dataclass(frozen=True)
class PresetChoice(OptionGroup):
    """The run's preset and the command line's changes to it."""

    preset: RunPreset = None
    backbone: BackboneOption = None
    local: LocalOption = None
    threshold: Threshold = None
    top_k: TopK = None
    all_datasets: AllDatasets = False

    def chosen(self, changes: dict, grouping):
        """The preset with these options and ``changes``; ``grouping`` as grouping_option gives it."""
        chosen = customised_preset(
            self.preset or DEFAULT_PRESET,
            backbone=self.backbone,
            local=self.local,
            threshold=self.threshold,
            top_k=self.top_k,
            all_datasets=self.all_datasets,
            changes=changes,
        )
        return chosen if grouping is KEEP else chosen.replace(grouping=grouping)


@app.command()
def identify(
    root: Roots,
    out: RunOut,
    gallery: GalleryOption = None,
    dataset_name: DatasetName = None,
    choice: PresetChoice = PresetChoice(),
    report: Report = True,
    grouping: Grouping = None,
    submission_format: SubmissionFormat = "animalclef2025",
    columns: DatasetColumns = DatasetColumns(),
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    device: Device = None,
    speed: SpeedOptions = SpeedOptions(),
    batch_size: BatchSize = None,
    allow_outside_paths: AllowOutsidePaths = False,
    regions: RegionOptions = RegionOptions(),
    evidence: EvidenceOptions = EvidenceOptions(),
):
    """Assign every query a known identity or new_individual; write the submission and the report.

    Without --gallery, ROOT is a dataset: a gallery is built from its database rows on the fly
    and its queries identified. With --gallery, ROOT... are query photos and only they are
    described and matched."""
    from wildreid.evaluate.outputs import SUBMISSION_FORMATS, check_out_dir

    if submission_format not in SUBMISSION_FORMATS:
        raise ValueError(f"--format {submission_format}: choose one of {', '.join(SUBMISSION_FORMATS)}.")
    grouping_method = grouping_option(grouping)
    check_out_dir(out)  # before the work, not after it
    cache = None if no_cache else (cache_dir or user_cache_dir())
    if gallery is not None:
        speed_changes = _refuse_what_the_gallery_fixed(gallery, choice, regions, evidence, speed.changes(batch_size))
        photos, no_animal = _query_photos(root, columns, allow_outside_paths, regions, dataset_name)
        result = _identify_with_gallery(photos, gallery, choice, grouping_method, cache, device, speed_changes)
    else:
        if len(root) != 1:
            raise ValueError(
                f"give one dataset (got {len(root)} paths); to identify photos, folders or CSVs of "
                "paths against a saved gallery, add --gallery GALLERY."
            )
        dataset = columns.load(root[0], allow_outside_paths=allow_outside_paths)
        changes = {**speed.changes(batch_size), **regions.changes(), **evidence.changes()}
        chosen = choice.chosen(changes, grouping_method)
        dataset, no_animal = _animals_of(dataset, regions)
        console.print(
            f"[bold]{len(dataset.database)}[/] database and [bold]{len(dataset.queries)}[/] query "
            f"images in {len(dataset.dataset_names)} dataset(s); preset [bold]{chosen.name}[/] "
            f"({chosen.backbone})"
        )
        from wildreid.gallery.pipeline import identify as run_identify

        result = run_identify(dataset, chosen, cache_dir=cache, device=device)
    result.no_animal = no_animal
    _write_run(result, out, report=report, submission_format=submission_format)


def _refuse_what_the_gallery_fixed(
    folder: Path, choice: PresetChoice, regions: RegionOptions, evidence: EvidenceOptions, speed: dict
) -> dict:
    """Refuse the options a gallery fixed when they say something else than it does (they would
    otherwise be ignored in silence); return the speed options that may still apply (the batch
    size, which changes no answer)."""
    from wildreid.gallery.storage import saved_preset

    # Options a gallery always fixes: refused before its files are read (their message holds
    # whatever the gallery is, even one that is not there).
    if evidence.changes():
        raise ValueError(
            "--views, --mirror, --extra-local, --top-m, --adapt and --fusion-rule are fixed when a gallery is built "
            "(its calibration "
            "and thresholds were fitted with them); give them to `wildreid gallery build` instead."
        )
    if choice.local is not None:
        raise ValueError(
            "--local is fixed when a gallery is built (its keypoints are saved in it); leave it out with "
            "--gallery, or build another gallery with `wildreid gallery build --local ...`."
        )
    if regions.region_margin is not None or regions.foreground is not None:
        raise ValueError(
            "--region-margin and --foreground belong to the gallery (its photos were described with "
            "them); queries follow the gallery's. Build a gallery with them to change them."
        )
    fixed = saved_preset(folder)
    if choice.backbone and choice.backbone != fixed.backbone:
        raise ValueError(
            f"--backbone {choice.backbone}: the gallery {folder} was built with {fixed.backbone}, and its "
            "vectors fix the descriptor (queries are described with the gallery's). Leave --backbone out, "
            f"or build a gallery with `wildreid gallery build ROOT --out DIR --backbone {choice.backbone}`."
        )
    if choice.all_datasets and fixed.same_dataset_only:
        raise ValueError(
            f"--all-datasets: the gallery {folder} was built with one group per dataset, and its thresholds "
            "were fitted per group. Leave --all-datasets out, or build a gallery with "
            "`wildreid gallery build ROOT --out DIR --all-datasets`."
        )
    differing = {name: value for name, value in speed.items() if name != "batch_size" and getattr(fixed, name) != value}
    if differing:
        asked = ", ".join(f"{name} {value}" for name, value in differing.items())
        kept = ", ".join(f"{name} {getattr(fixed, name)}" for name in differing)
        raise ValueError(
            f"{asked}: the gallery {folder} fixes how photos are described ({kept}); queries are described "
            "as its photos were, so their scores compare. Leave --fast, --precision, --decode, --compile "
            "and --engine out with --gallery (--batch-size may be given), or build a gallery with them."
        )
    return {name: value for name, value in speed.items() if name == "batch_size"}


def _animals_of(dataset, regions: RegionOptions):
    """(the dataset, with one row per animal under --detections; the photos without one, or None)."""
    from wildreid.data.dataset import Dataset, DatasetError, validate_dataset

    rows, no_animal = regions.animals(dataset.table, labelled=True)
    if no_animal is None:
        return dataset, None
    if rows.empty:
        raise DatasetError("MegaDetector found no animal in any of the photos: nothing to identify.")
    dataset = Dataset(rows, dataset.source)
    validate_dataset(dataset, check_files=False)  # e.g. a dataset whose database photos hold no animal
    return dataset, no_animal


def _query_photos(sources, columns: DatasetColumns, allow_outside_paths, regions: RegionOptions, dataset_name):
    """(the query photos to identify against a gallery, the photos without an animal or None)."""
    from wildreid.data.dataset import DatasetError, load_query_photos

    photos = load_query_photos(
        sources,
        path_column=columns.path_column,
        image_id_column=columns.image_id_column,
        allow_outside_paths=allow_outside_paths,
    )
    photos, no_animal = regions.animals(photos, labelled=False)
    if no_animal is not None and photos.empty:
        raise DatasetError("MegaDetector found no animal in any of the photos: nothing to identify.")
    if dataset_name is not None:
        photos["dataset"] = dataset_name
    return photos, no_animal


def _identify_with_gallery(photos, folder: Path, choice: PresetChoice, grouping, cache, device, speed: dict):
    from wildreid.gallery.gallery import FITTED, Gallery

    saved = Gallery.load(folder, device=device, preset=choice.preset)
    saved.preset = saved.preset.replace(**speed)  # the batch size only (see _refuse_what_the_gallery_fixed)
    threshold, top_k = choice.threshold, choice.top_k
    setting = FITTED if threshold is None or threshold.strip().lower() == "auto" else parse_threshold(threshold)
    # Refused as a preset would refuse them: values that would quietly mean something else.
    check_top_k(top_k or saved.preset.top_k)
    check_threshold_setting(saved.preset.threshold if setting == FITTED else setting)
    console.print(
        f"[bold]{len(photos)}[/] query photo(s) against the gallery {folder} ({len(saved.table)} photos; "
        f"preset [bold]{saved.preset.name}[/], {saved.backbone.name})"
    )
    return saved.identify(
        photos, cache_dir=cache, threshold=setting, top_k=top_k, grouping=FITTED if grouping is KEEP else grouping
    )


def _write_run(result, out: Path, *, report: bool, submission_format: str) -> None:
    """Write the run's files and say what they hold."""
    from wildreid.evaluate.outputs import evaluate_if_possible, write_run

    evaluation = evaluate_if_possible(result)
    written = write_run(result, out, evaluation=evaluation, report=report, format=submission_format)
    if len(result.failures):
        console.print(
            f"[yellow]{len(result.failures)} image(s) could not be read and were skipped "
            f"(listed in {written['failures']}); such queries are answered new_individual.[/]"
        )
    if result.no_animal is not None and len(result.no_animal):
        console.print(
            f"[yellow]{len(result.no_animal)} photo(s) without an animal were left out (listed in "
            f"{written['no_animal']}).[/]"
        )
    for note in result.notes:
        console.print(f"[yellow]{escape(note)}[/]", highlight=False)
    print_thresholds(result)
    if evaluation:
        print_evaluation(evaluation)
    print_written(written)
    from wildreid.evaluate.summary import UNCERTAIN_MEANING, summary_line  # pandas: not at the help's start

    calibrated = bool(result.preset.local)
    stdout.print(summary_line(result.candidates, calibrated), highlight=False)
    if calibrated:
        stdout.print(f"({UNCERTAIN_MEANING})", highlight=False)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder for the run.")] = Path("demo-out"),
    data: Annotated[Path, typer.Option(help="Where the generated demo dataset is written.")] = Path("demo-data"),
    preset: PresetOption = DEFAULT_PRESET,
    cache_dir: CacheDir = None,
):
    """Generate the built-in demo dataset (drawn patterned animals), identify it, print the score."""
    from wildreid.data.demo import make_demo_dataset

    metadata = make_demo_dataset(data)
    console.print(f"demo dataset: {metadata}")
    identify([metadata.parent], out, choice=PresetChoice(preset=preset), cache_dir=cache_dir)


def print_thresholds(result) -> None:
    for group, threshold in result.thresholds.items():
        choice = result.threshold_choices.get(group)
        text = "none (closed set)" if threshold is None else f"{threshold:.4f} ({result.preset.score_name})"
        if choice is not None:
            text += f" (chosen on the database; simulated score {choice.simulated_score:.4f})"
        console.print(f"threshold {group}: {text}", highlight=False)


def print_evaluation(evaluation: dict) -> None:
    """AnimalCLEF2025 (score = sqrt(BAKS * BAUS)) and AnimalCLEF2026 (ARI) figures per dataset; a
    2026 submission names clusters, not individuals, so it has no BAKS/BAUS.

    One row per figure and one column per dataset, so that an 80-column terminal or a log holds
    the table whole (a column per figure needed about 125); a legend under it says what each
    figure means."""
    keys = shown_metrics(evaluation)
    columns = [(name, figures) for name, figures in evaluation["per_dataset"].items()]
    columns.append(("mean", {key: evaluation.get(key) for key in keys} | {"queries": None}))
    any_unmeasurable = any(unmeasurable_new(f) for _, f in columns[:-1])

    def cell(figures: dict, key: str) -> str:
        return figure_text(figures, key, star=figures is columns[-1][1] and any_unmeasurable)

    stdout.print("AnimalCLEF2025 metric, and ARI (AnimalCLEF2026)", style="italic", highlight=False)
    labels = ["queries", *(METRICS[key][0] for key in keys)]
    print_columns(
        labels,
        [
            (name, ["" if f["queries"] is None else str(f["queries"]), *(cell(f, key) for key in keys)])
            for name, f in columns
        ],
    )
    legend = [(f"{METRICS[key][0]}:", METRICS[key][1]) for key in keys]
    print_legend(legend + ([("*", NOT_MEASURABLE)] if any_unmeasurable else []))


def print_written(written: dict) -> None:
    for name, path in written.items():
        console.print(f"{name:>11}: {path}")
