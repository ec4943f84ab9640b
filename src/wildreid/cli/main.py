"""The `wildreid` command. Each command module registers its commands on the root app when imported."""

from __future__ import annotations

import sys

from wildreid.cli import catalog, evaluate, extract, gallery, identify, serve, train, users, watch  # noqa: F401
from wildreid.cli.app import app

__all__ = ["app", "main"]

# The order `wildreid --help` lists the commands in (the groups, catalog and gallery, come after them).
ORDER = ("identify", "extract", "evaluate", "presets", "validate", "demo", "serve", "train", "watch")
app.registered_commands.sort(key=lambda command: ORDER.index(command.callback.__name__))


def main() -> None:  # pragma: no cover - entry point for `python -m wildreid`
    app(sys.argv[1:])
