"""`wildreid watch`: identify photos as they land in a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from wildreid.cli.app import app, console, user_cache_dir
from wildreid.cli.options import CacheDir, DatasetName, Device
from wildreid.presets import DEFAULT_PRESET, get_preset

WatchedFolder = Annotated[Path, typer.Argument(help="The folder photos arrive in (searched recursively).")]
ResultsOut = Annotated[Path, typer.Option(help="Where results.csv is appended (the columns of candidates.csv).")]
WatchGallery = Annotated[Optional[Path], typer.Option(help="The gallery to identify against.")]
WatchCatalog = Annotated[
    Optional[Path],
    typer.Option(
        "--catalog",
        help="Identify against this catalogue's photos instead, and file every photo as a query "
        "waiting for review in the web app.",
    ),
]
CatalogPreset = Annotated[str, typer.Option(help="With --catalog: the preset of its gallery.")]
SettleSeconds = Annotated[
    float,
    typer.Option(help="A photo is read once unchanged for this long (so a file still being copied is not read)."),
]
PollSeconds = Annotated[float, typer.Option(help="Seconds between looks at the folder.")]
Once = Annotated[bool, typer.Option("--once", help="Identify what is there, then stop.")]
WatchOutsidePaths = Annotated[
    bool,
    typer.Option(
        "--allow-outside-paths",
        help="Read photos whose symbolic links lead outside FOLDER too (refused by default, so "
        "that a link dropped in the folder cannot make wildreid read other files).",
    ),
]


@app.command()
def watch(
    folder: WatchedFolder,
    out: ResultsOut,
    gallery: WatchGallery = None,
    catalog: WatchCatalog = None,
    dataset_name: DatasetName = None,
    preset: CatalogPreset = DEFAULT_PRESET,
    settle_seconds: SettleSeconds = 2.0,
    poll_seconds: PollSeconds = 1.0,
    once: Once = False,
    allow_outside_paths: WatchOutsidePaths = False,
    cache_dir: CacheDir = None,
    device: Device = None,
):
    """Identify photos as they land in FOLDER; stop with Ctrl-C. Safe to kill and restart: every
    photo is recorded exactly once."""
    from wildreid.gallery.gallery import Gallery
    from wildreid.review.watch import Watcher, check_folder, check_results

    if (gallery is None) == (catalog is None):
        raise ValueError("give --gallery GALLERY or --catalog CATALOGUE (one of them).")
    check_folder(folder)  # before the model is loaded: a wrong folder or --out is said at once
    check_results(out)
    cache = cache_dir or user_cache_dir()
    store = None
    if catalog is not None:
        store, loaded, cache, dataset_name = _catalog_gallery(catalog, preset, cache_dir, device, dataset_name)
    else:
        loaded = Gallery.load(gallery, device=device)
    watcher = Watcher(
        folder,
        out,
        loaded,
        catalog=store,
        dataset=dataset_name,
        cache_dir=cache,
        settle_seconds=settle_seconds,
        allow_outside_paths=allow_outside_paths,
        report=lambda line: console.print(escape(line), highlight=False),
    )
    recorded_before = len(watcher.done)
    how = "identifying what is there, then stopping" if once else "Ctrl-C stops"
    console.print(
        f"watching {folder} ({recorded_before} photo(s) already recorded in {watcher.results}); {how}",
        highlight=False,
    )
    try:
        watcher.run(poll_seconds, once=once)
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        if store is not None:
            store.close()
    console.print(
        f"{len(watcher.done) - recorded_before} photo(s) answered in this run, {len(watcher.failed)} unreadable "
        f"(retried when they change), {len(watcher.refused)} refused; every answer is in {watcher.results}",
        highlight=False,
    )


def _catalog_gallery(catalog: Path, preset: str, cache_dir: Path | None, device: str | None, dataset_name):
    """(the open catalogue, its gallery, the cache, the dataset the photos go to) for --catalog."""
    from wildreid.catalog.store import Catalog
    from wildreid.describe.backbones import load_backbone
    from wildreid.describe.extract import default_device
    from wildreid.review.identify import catalog_cache_dir as catalog_cache
    from wildreid.review.identify import catalog_gallery

    store = Catalog(catalog, create=False)
    cache = cache_dir or catalog_cache(catalog)
    chosen = get_preset(preset)
    loaded = catalog_gallery(
        store,
        chosen,
        cache_dir=cache,
        backbone=load_backbone(chosen.backbone, preprocess=chosen.preprocess, device=device or default_device()),
    )
    if dataset_name is None:
        names = store.datasets()
        if len(names) > 1:
            raise ValueError(
                f"the catalogue holds several datasets ({', '.join(names)}); say which one the "
                "photos belong to (--dataset)."
            )
        dataset_name = names[0]
    return store, loaded, cache, dataset_name
