"""The generic registry behind every named choice (util/registry.py)."""

from __future__ import annotations

import types

import pytest

from wildreid.util.registry import Registry, UnknownName


def test_register_by_call_and_by_decorator_in_order():
    colours = Registry("colour")
    colours.register("red", 1)

    @colours.register("green")
    def green():
        return 2

    assert colours.names() == ["red", "green"] == list(colours)
    assert colours.get("red") == 1 and colours["green"] is green and green() == 2
    assert "red" in colours and "blue" not in colours and len(colours) == 2
    assert colours.items() == [("red", 1), ("green", green)] and colours.values() == [1, green]


def test_unknown_name_lists_the_known_ones():
    colours = Registry("colour")
    colours.register("red", 1)
    colours.register("green", 2)
    with pytest.raises(UnknownName) as error:
        colours.get("blue")
    assert str(error.value) == "unknown colour 'blue'; choose one of red, green"
    assert isinstance(error.value, KeyError) and isinstance(error.value, ValueError)


def test_a_name_is_registered_once_and_can_be_removed():
    colours = Registry("colour")
    colours.register("red", 1)
    with pytest.raises(ValueError, match="colour 'red' is registered twice"):
        colours.register("red", 2)
    colours.unregister("red")
    assert colours.names() == []


def test_modules_are_imported_when_first_read(monkeypatch):
    colours = Registry("colour", modules=("wildreid_test_colours",))
    imported = []

    def fake_import(name):
        imported.append(name)
        colours.register("red", 1)
        assert colours.names() == ["red"]  # reading the registry while it loads does not recurse

    monkeypatch.setattr("importlib.import_module", fake_import)
    assert imported == []  # nothing imported before the registry is read
    assert colours.names() == ["red"] and colours.names() == ["red"]
    assert imported == ["wildreid_test_colours"]  # once


def test_names_follow_the_order_of_modules_not_of_imports(monkeypatch):
    colours = Registry("colour", modules=("first", "second"))
    monkeypatch.setattr("importlib.import_module", lambda name: None)

    def made_in(module):
        return types.SimpleNamespace(__module__=module)

    colours.register("blue", made_in("second"))  # its module happened to be imported first
    colours.register("red", made_in("first"))
    colours.register("green", made_in("first"))
    colours.register("grey", made_in("a_test"))  # from no listed module: last
    assert colours.names() == ["red", "green", "blue", "grey"]
