"""What every command shares: the root Typer app, the two consoles, the error handling that turns
an error a user can act on into one message and an exit code, and groups of options taken as one
parameter."""

from __future__ import annotations

import dataclasses
import inspect
import os
import typing
from functools import wraps
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from wildreid.util.errors import BackboneUnavailable
from wildreid.util.lock import LockHeld


class App(typer.Typer):
    """A Typer app whose every command reports an error a user can act on as one message
    (:func:`friendly_errors`) and may take groups of options (:class:`OptionGroup`). The decorated
    function itself stays a plain function."""

    def __init__(self, *, help: str | None = None, **settings):
        super().__init__(help=unwrap_help(help), **settings)

    def command(self, name: str | None = None, **settings):
        def decorate(function):
            help = settings.get("help") or unwrap_help(inspect.getdoc(function))
            register = super(App, self).command(name, **{**settings, "help": help})
            register(friendly_errors(spread_option_groups(function)))
            return function

        return decorate


def unwrap_help(text: str | None) -> str | None:
    """Help text as paragraphs that the terminal wraps. Typer's rich mode keeps a docstring's own
    line breaks, so source lines wrapped at 100 columns broke sentences in the middle at 80; only
    blank lines (paragraphs) and list items keep their breaks."""
    if not text:
        return text
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not line.lstrip().startswith(("- ", "* ")):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line.strip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


app = App(
    help="wildreid: identify individual animals from photos.\n\n"
    "Give it a labelled database of photos and query photos; every query gets a known identity "
    "or 'new_individual'. Reads AnimalCLEF2025 metadata.csv folders, any CSV with path/identity/"
    "split columns, or a folder per identity plus a query folder. Writes an AnimalCLEF2025 "
    "submission, a detailed candidate table and an HTML report.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
console = Console(stderr=True)
stdout = Console()


def print_columns(rows: list[str], columns: list[tuple[str, list[str]]], *, cell_width: int = 10) -> None:
    """A table with a row per figure (``rows``) and a column per thing measured (``columns``:
    name and one cell per row), split into as many tables as it takes to fit the console: a
    column per figure instead would need 100-130 characters, and Rich cuts cells to "sco…" in
    an 80-column terminal or a log."""
    from rich.table import Column, Table

    label_width = max(map(len, rows), default=0)
    per_table = max(1, (stdout.width - label_width - 4) // (cell_width + 3))
    for first in range(0, len(columns), per_table):
        part = columns[first : first + per_table]
        # A label folds rather than ending in "…" where Rich must narrow the table.
        table = Table(
            Column("", overflow="fold"), *(Column(escape(name), justify="right", overflow="fold") for name, _ in part)
        )
        for index, label in enumerate(rows):
            table.add_row(label, *(escape(cells[index]) for _, cells in part))
        stdout.print(table)


def print_legend(entries: list[tuple[str, str]]) -> None:
    """What each figure means, the explanations wrapped beside their labels."""
    from rich.table import Table

    legend = Table.grid(padding=(0, 1))
    legend.add_column(no_wrap=True)
    legend.add_column()
    for label, meaning in entries:
        legend.add_row(escape(label), escape(meaning))
    stdout.print(legend, highlight=False)


def user_cache_dir() -> Path:
    return Path(os.environ.get("WILDREID_CACHE", Path.home() / ".cache" / "wildreid"))


def friendly_errors(command):
    """Errors a user can act on are printed as one message, not a traceback."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        # DatasetError, GalleryError, CatalogError and the like are ValueErrors; LockHeld names
        # the other writer.
        except (BackboneUnavailable, LockHeld, ValueError, KeyError, FileNotFoundError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
            console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
            raise typer.Exit(2) from None
        except OSError as error:
            # The last resort for the file system saying no (read-only, full, permissions): the
            # file and the reason, never a traceback. Known cases have their own message first.
            where = f"{error.filename}: " if error.filename else ""
            console.print(f"[bold red]error:[/] {escape(where + str(error.strerror or error))}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


class OptionGroup:
    """Base of a frozen dataclass of options that go together (how a dataset's CSV is read, the
    extraction speed options, ...). A command takes the group as ONE parameter, such as
    ``columns: DatasetColumns = DatasetColumns()``; on the command line each of its fields is an
    option of its own, in that place, declared by the field's ``Annotated`` type."""


def spread_option_groups(function):
    """``function`` as Typer should see it: every OptionGroup parameter replaced by the group's
    fields; called with those, it builds the group again and calls ``function``."""
    signature = inspect.signature(function, eval_str=True)
    groups = {
        name: parameter.annotation
        for name, parameter in signature.parameters.items()
        if isinstance(parameter.annotation, type) and issubclass(parameter.annotation, OptionGroup)
    }
    if not groups:
        return function
    parameters = []
    for parameter in signature.parameters.values():
        if parameter.name in groups:
            parameters += _fields_as_parameters(groups[parameter.name])
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @wraps(function)
    def command(**options):
        for name, group in groups.items():
            options[name] = group(**{field.name: options.pop(field.name) for field in dataclasses.fields(group)})
        return function(**options)

    command.__signature__ = signature.replace(parameters=parameters)
    command.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return command


def _fields_as_parameters(group: type[OptionGroup]) -> list[inspect.Parameter]:
    declared = typing.get_type_hints(group, include_extras=True)
    return [
        inspect.Parameter(
            field.name, inspect.Parameter.KEYWORD_ONLY, annotation=declared[field.name], default=field.default
        )
        for field in dataclasses.fields(group)
    ]
