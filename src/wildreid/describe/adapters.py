"""Adapters: a descriptor adapted to one catalogue, learned from its own labels when a gallery is
fitted (gallery/part.py chooses, cross-fits and saves them).

An adapter maps the backbone's global vectors to vectors whose cosine separates this catalogue's
individuals better. Every level is a small object with ``fit(vectors, identities, seed)`` and
``transform(vectors)``; its state is a few named arrays, saved beside the gallery's index with the
fingerprint of the backbone whose vectors it was fitted on (another backbone's vectors would mean
nothing to it). ``transform`` always returns unit rows, so a cosine stays an inner product and the
FAISS index and every cosine threshold keep their meaning.

Adding a level (a trained head, a fine-tuned model) is one file in this wing whose class is
registered ``ADAPTERS.register("name", TheClass)``, plus its module name in ``ADAPTERS``' list.
"""

from __future__ import annotations

import numpy as np

from wildreid.util.registry import Registry

NONE = "none"  # no adapter: the backbone's vectors as they are


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32, computed in float64."""
    block = np.asarray(vectors, dtype=np.float64)
    return (block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Adapter:
    """A fitted map of global vectors; subclasses set ``name`` and implement the four methods."""

    name = ""
    # Whether --adapt auto compares this level (a level that costs minutes per fit, or that never
    # earned its place on held-out identities, is used only when named).
    in_auto = True

    def __init__(self) -> None:
        self.fingerprint: str | None = None  # the backbone's cache_key, set by the gallery

    def fit(self, vectors: np.ndarray, identities: np.ndarray, *, seed: int = 0) -> "Adapter":
        raise NotImplementedError

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Adapted unit vectors of ``vectors`` (the backbone's, normalised or not)."""
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """What ``from_state`` needs, as named arrays (saved with numpy, no pickle)."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "Adapter":
        raise NotImplementedError


ADAPTERS: Registry[type[Adapter]] = Registry(
    "adapter", modules=("wildreid.describe.adapt_linear", "wildreid.describe.adapt_head")
)


def adapter_names() -> list[str]:
    """The levels a preset may name (besides 'none' and 'auto')."""
    return ADAPTERS.names()


def auto_levels() -> list[str]:
    """The levels 'auto' compares with 'none'."""
    return [name for name, level in ADAPTERS.items() if level.in_auto]


def make_adapter(name: str) -> Adapter:
    return ADAPTERS.get(name)()


def save_adapter(path, adapter: Adapter) -> None:
    """The adapter's state, its level's name and its backbone fingerprint, in one .npz file."""
    arrays = {f"state_{key}": value for key, value in adapter.state().items()}
    arrays["adapter_name"] = np.array(adapter.name)
    arrays["fingerprint"] = np.array(adapter.fingerprint or "")
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stubs type **kwds as its own flags


def load_adapter(path) -> Adapter:
    with np.load(path, allow_pickle=False) as content:
        name = str(content["adapter_name"])
        state = {key[len("state_") :]: content[key] for key in content.files if key.startswith("state_")}
        fingerprint = str(content["fingerprint"]) or None
    adapter = ADAPTERS.get(name).from_state(state)
    adapter.fingerprint = fingerprint
    return adapter
