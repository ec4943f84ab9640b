"""Named choices, one registry per kind: backbones, local methods, calibrators, fusion rules,
grouping methods, run outputs.

A registry maps a name to an object (a class, a function, a record). Adding a choice is one new
file whose entry registers itself::

    GROUPING = Registry("grouping method", modules=("wildreid.decide.agglomerative",))

    @GROUPING.register("average")
    def average(graph, ...): ...

``modules`` names the files whose import registers the entries: they are imported the first time
the registry is read (not when it is created), so a file may import the registry it registers
into without a cycle, and a registry nobody reads costs nothing. Names come in the order of
``modules`` (an entry's module is its ``__module__``), then in registration order, whichever file
happened to be imported first. Whatever lists names (a command's help, a validation message)
reads ``names()``, never a hand-written list.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """A name no entry is registered under. Both a KeyError (a failed look-up) and a ValueError (a
    bad argument), so callers that caught either before registries existed still catch it."""

    def __str__(self) -> str:
        return str(self.args[0])  # KeyError would quote the message


class Registry(Generic[T]):
    """Entries by name, in registration order."""

    def __init__(self, kind: str, modules: tuple[str, ...] = ()):
        self.kind = kind  # as messages name it: "unknown {kind} 'x'"
        self.modules = modules
        self._entries: dict[str, T] = {}
        self._loaded = not modules
        self._loading = False

    def register(self, name: str, entry: T | None = None) -> T | Callable[[T], T]:
        """``register(name, entry)``, or ``@register(name)`` above a class or function. A name is
        registered once: a second entry under it is a mistake (two files claiming one name)."""
        if entry is None:
            return lambda decorated: self.register(name, decorated)
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry
        if self.modules:  # keep the order of ``modules``, whatever the order of imports
            rank = {module: place for place, module in enumerate(self.modules)}
            place = {
                key: rank.get(getattr(value, "__module__", None), len(rank)) for key, value in self._entries.items()
            }
            self._entries = dict(sorted(self._entries.items(), key=lambda item: place[item[0]]))
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's own, once the test is done)."""
        del self._entries[name]

    def get(self, name: str) -> T:
        """The entry registered under ``name``; an unknown name is an error listing the known ones."""
        self._load()
        if name not in self._entries:
            raise UnknownName(f"unknown {self.kind} '{name}'; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return list(self._entries.items())

    def values(self) -> list[T]:
        self._load()
        return list(self._entries.values())

    # Read like the tuple of names the registries replaced: ``name in METHODS``,
    # ``", ".join(METHODS)``, ``KNOWN[name]``.
    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    def _load(self) -> None:
        if self._loaded or self._loading:  # loading: a module being imported reads the registry it fills
            return
        self._loading = True
        try:
            for module in self.modules:
                importlib.import_module(module)
            self._loaded = True
        finally:
            self._loading = False
