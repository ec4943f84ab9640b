"""`wildreid users ...`: the accounts of the review app (add, list, remove), kept in the catalogue."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from wildreid.cli.app import App, app, console, stdout
from wildreid.cli.catalog import DEFAULT_CATALOG, CatalogPath

users_app = App(
    help=(
        "Accounts of the review app (`wildreid serve`): viewers read, reviewers also upload and decide, "
        "admins also merge individuals, undo others' changes and manage users. Stored in the catalogue."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(users_app, name="users")

PASSWORD_ENV = "WILDREID_PASSWORD"


def first_admin_command(catalog: Path) -> str:
    """The command that creates the first user (serve's message names it too)."""
    return f"wildreid users add NAME --role admin --catalog {catalog}"


def _password(password_file: Path | None) -> str:
    # Never an option's value: a password on the command line shows in `ps` and the shell history.
    if password_file is not None:
        return password_file.read_text(encoding="utf-8").rstrip("\r\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The user's name, recorded with every change they make.")],
    role: Annotated[str, typer.Option(help="viewer, reviewer or admin. The first user must be an admin.")] = "reviewer",
    catalog: CatalogPath = DEFAULT_CATALOG,
    password_file: Annotated[
        Optional[Path],
        typer.Option(help=f"File holding the password (else ${PASSWORD_ENV}, else it is asked for, hidden)."),
    ] = None,
    api_token: Annotated[
        bool,
        typer.Option(
            "--api-token",
            help="Also make a personal API token for scripts (the X-Wildreid-Token header); shown once.",
        ),
    ] = False,
):
    """Add a user who may sign in to the review app."""
    from wildreid.catalog.store import Catalog
    from wildreid.catalog.users import add_user, check_name, check_role, new_api_token, user_count

    name, role = check_name(name), check_role(role)
    with Catalog(catalog, create=False) as opened:
        if user_count(opened) == 0 and role != "admin":
            raise ValueError(
                f"the first user must be an admin, who can add the others: `{first_admin_command(catalog)}`."
            )
        token = new_api_token() if api_token else None
        add_user(opened, name, role, _password(password_file), by="wildreid users add", api_token=token)
    console.print(f"added {name} ({role}) to {catalog}", highlight=False)
    if token:
        stdout.print(
            f"API token of {name} (shown once; send it as the X-Wildreid-Token header): {token}",
            highlight=False,
            soft_wrap=True,
        )


@users_app.command("list")
def users_list(catalog: CatalogPath = DEFAULT_CATALOG):
    """List the users, their roles and how many sessions each has open."""
    from wildreid.catalog.store import Catalog
    from wildreid.catalog.users import users

    with Catalog(catalog, create=False) as opened:
        found = users(opened)
    if not found:
        console.print(f"no users yet: create the first admin with `{first_admin_command(catalog)}`", highlight=False)
        return
    table = Table("name", "role", "created", "API token", "sessions")
    for user in found:
        table.add_row(
            user["name"],
            user["role"],
            user["created_at"][:10],
            "yes" if user["has_api_token"] else "-",
            str(user["sessions"]),
        )
    stdout.print(table)


@users_app.command("remove")
def users_remove(
    name: Annotated[str, typer.Argument(help="The user to remove; their recorded changes keep their name.")],
    catalog: CatalogPath = DEFAULT_CATALOG,
):
    """Remove a user and sign them out everywhere (the last admin stays)."""
    from wildreid.catalog.store import Catalog
    from wildreid.catalog.users import remove_user

    with Catalog(catalog, create=False) as opened:
        remove_user(opened, name)
    console.print(f"removed {name}; their sessions ended", highlight=False)
