"""`wildreid serve`: the review web app over a catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from wildreid.cli.app import app, console
from wildreid.cli.catalog import DEFAULT_CATALOG, CatalogCache, CatalogPath
from wildreid.cli.options import Device, PresetOption
from wildreid.presets import DEFAULT_PRESET, get_preset


@app.command()
def serve(
    catalog: CatalogPath = DEFAULT_CATALOG,
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    token_file: Annotated[
        Optional[Path],
        typer.Option(help="File holding the review token (else $WILDREID_TOKEN, else one is generated and printed)."),
    ] = None,
    preset: PresetOption = DEFAULT_PRESET,
    cache_dir: CatalogCache = None,
    device: Device = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest photo accepted, in MiB.")] = 20,
    max_files: Annotated[int, typer.Option(help="Most photos in one upload.")] = 20,
    allowed_host: Annotated[
        Optional[list[str]],
        typer.Option(
            help="A Host name the app answers to besides localhost and --host (e.g. the name of a reverse "
            "proxy in front of it); repeat for several. Other names get 400 (DNS-rebinding guard)."
        ),
    ] = None,
    map_tiles: Annotated[
        str,
        typer.Option(
            help="A tile server's URL template, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png, drawn under "
            "the sighting maps (mind its usage policy and attribution). Default: none; the maps are drawn "
            "offline, and no page asks anything of another server."
        ),
    ] = "",
    forwarded_allow_ips: Annotated[
        Optional[list[str]],
        typer.Option(
            help="Address of a reverse proxy in front of the app whose X-Forwarded-For / X-Forwarded-Proto "
            "headers are trusted (comma-separated or repeated). Default: none, so a client cannot pick the "
            "address the sign-in throttle sees by sending the header itself."
        ),
    ] = None,
):
    """Start the review web app: upload photos, confirm candidates, browse individuals."""
    import logging

    import uvicorn

    from wildreid.web.app import create_app
    from wildreid.web.config import WebConfig

    if not catalog.is_file():
        raise FileNotFoundError(
            f"{catalog}: no catalogue here. Create one first with "
            f"`wildreid catalog import --catalog {catalog} DATASET`."
        )
    token = token_file.read_text(encoding="utf-8").strip() if token_file else ""
    config = WebConfig(
        catalog,
        token=token,
        preset=get_preset(preset).name,
        cache_dir=cache_dir,
        device=device,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
        max_files=max_files,
        allowed_hosts=[host, *(allowed_host or [])],
        map_tiles=map_tiles,
    )
    # The app logs failures (with their reference numbers) under 'wildreid.web'.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    application = create_app(config)
    console.print(f"review app on http://{host}:{port}/ (catalogue {catalog}, preset {config.preset})", highlight=False)
    if config.token_generated:
        console.print(
            f"review token: [bold]{config.token}[/] (needed to upload and decide; set "
            "WILDREID_TOKEN or --token-file to choose your own)",
            highlight=False,
        )
    # uvicorn's own default trusts forwarded headers from 127.0.0.1: then any local client, or any
    # client of a proxy that passes the header on, would choose its address for the throttle.
    proxies = [part.strip() for value in forwarded_allow_ips or [] for part in value.split(",") if part.strip()]
    uvicorn.run(
        application,
        host=host,
        port=port,
        server_header=False,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies,
    )
