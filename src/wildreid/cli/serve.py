"""`wildreid serve`: the review web app over a catalogue."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from wildreid.cli.app import app, console
from wildreid.cli.catalog import DEFAULT_CATALOG, CatalogCache, CatalogPath
from wildreid.cli.options import Device, PresetOption
from wildreid.presets import DEFAULT_PRESET, get_preset
from wildreid.web.config import SESSION_IDLE_HOURS, SESSION_LONGEST_HOURS, TOKEN_ENV


@app.command()
def serve(
    catalog: CatalogPath = DEFAULT_CATALOG,
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    public_read: Annotated[
        bool,
        typer.Option(
            "--public-read",
            help="Let anonymous visitors read every page and photo (for open projects); changes still need "
            "a signed-in reviewer. Default: nothing is readable without signing in.",
        ),
    ] = False,
    session_idle_hours: Annotated[
        float, typer.Option(help="Sign a user out after this many hours without a request.")
    ] = SESSION_IDLE_HOURS,
    token_file: Annotated[
        Optional[Path],
        typer.Option(hidden=True, help="Replaced by user accounts (`wildreid users add`); refused with advice."),
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
    refit_after: Annotated[
        int,
        typer.Option(
            help="Learn from the reviewers' answers once this many were given since the gallery last did: "
            "its adapter is refitted in the background (uploads go on) and swapped in when done; 0: never. "
            "Only with a preset that adapts its descriptor (--adapt)."
        ),
    ] = 25,
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
    _check_accounts(catalog, token_file)
    config = WebConfig(
        catalog,
        preset=get_preset(preset).name,
        cache_dir=cache_dir,
        device=device,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
        max_files=max_files,
        allowed_hosts=[host, *(allowed_host or [])],
        map_tiles=map_tiles,
        public_read=public_read,
        refit_after=refit_after,
        session_idle_s=session_idle_hours * 3600,
        session_longest_s=max(session_idle_hours, SESSION_LONGEST_HOURS) * 3600,
    )
    # The app logs failures (with their reference numbers) under 'wildreid.web'.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    application = create_app(config)
    console.print(f"review app on http://{host}:{port}/ (catalogue {catalog}, preset {config.preset})", highlight=False)
    console.print(
        "anonymous visitors may read (--public-read); changes need a signed-in reviewer"
        if public_read
        else "sign in with a user name and password (`wildreid users list` shows the users)",
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


def _check_accounts(catalog: Path, token_file: Path | None) -> None:
    """Refuse to start without a user who can sign in, or with the shared token of earlier versions
    (which named nobody): say which command makes an account."""
    from wildreid.catalog.connection import Connection
    from wildreid.catalog.users import user_count
    from wildreid.cli.users import first_admin_command

    if token_file is not None or os.environ.get(TOKEN_ENV):
        where = "--token-file" if token_file is not None else f"${TOKEN_ENV}"
        raise ValueError(
            f"{where}: the shared review token was replaced by user accounts, so that every change names "
            f"who made it. Create accounts with `{first_admin_command(catalog)}` (then `wildreid users add "
            f"NAME --role reviewer` per person), drop {where}, and start again."
        )
    with Connection(catalog, create=False) as opened:
        count = user_count(opened)
    if count == 0:
        raise ValueError(
            f"{catalog}: no users yet, so nobody could sign in. "
            f"Create the first admin with `{first_admin_command(catalog)}`."
        )
