"""Reviewers' answers as labels: which photos the "same" answers put together, and under what name.

A "same" answer joins two photos, or a photo and a known individual; "different" answers join
nothing. Each set of photos joined by "same" answers is one animal: named after the known
individual it was joined to, else given a provisional name of its own. A set joined to two known
individuals contradicts itself (a mistaken answer, or two records of one animal) and teaches
nothing until it is resolved. A photo no "same" answer touches stays unlabelled.

These labels are what the adaptation stage learns from besides the catalogue's own photos
(gallery/adaptation.py, ``Gallery.teach``): within-animal variation the catalogue may not show
yet (the new individuals, other cameras and seasons).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any, cast

import pandas as pd

from wildreid.decide.queue import components

PROVISIONAL = "answered-"  # prefix of the name of an animal only answers know


def answered_labels(same_pairs: Iterable[tuple[Any, Any]], known: Mapping[Any, str]) -> dict[Any, str]:
    """{photo: label} for every photo a "same" answer ties to another photo or to a known
    individual. ``same_pairs``: (node, node) pairs answered "same"; ``known``: the nodes that are
    known individuals, with their identity (every other node is a photo). Provisional labels are
    ``answered-1``, ``answered-2``, ... in the order of each set's first photo (sorted as text),
    so the same answers give the same labels."""
    same_pairs = list(same_pairs)
    nodes = list(dict.fromkeys(node for pair in same_pairs for node in pair))
    place = {node: position for position, node in enumerate(nodes)}
    owners = components(len(nodes), [(place[left], place[right]) for left, right in same_pairs])
    sets: dict[int, list] = {}
    for node, owner in zip(nodes, owners.tolist()):
        sets.setdefault(owner, []).append(node)
    # each set: (its photos sorted as text, the known individuals it is tied to)
    animals = [
        (sorted((node for node in tied if node not in known), key=str), {known[n] for n in tied if n in known})
        for tied in sets.values()
    ]
    labels: dict[Any, str] = {}
    provisional = 0
    for photos, identities in sorted(animals, key=lambda animal: str(animal[0][:1])):
        if len(identities) > 1 or not photos or (not identities and len(photos) < 2):
            continue  # contradicting itself, no photo, or one photo alone: nothing to learn
        if not identities:
            provisional += 1
        name = identities.pop() if identities else f"{PROVISIONAL}{provisional}"
        labels.update({photo: name for photo in photos})
    return labels


def answered_photos(answers: pd.DataFrame) -> pd.DataFrame:
    """The photos an answers table (data/answers_file.py: photo, other, individual, answer[,
    dataset]) labels: a table of image_id (the photo's path), path, identity (and dataset where
    given)."""
    same = answers[answers["answer"] == "same"]
    has_dataset = "dataset" in answers
    scope = same["dataset"].fillna("") if has_dataset else pd.Series("", index=same.index)
    pairs: list[tuple[Hashable, Hashable]] = []
    known: dict[Hashable, str] = {}
    for (_, row), part in zip(same.iterrows(), scope):
        left = ("photo", part, row["photo"])
        if isinstance(row["other"], str):  # a second photo (a blank reads as None or NaN)
            pairs.append((left, ("photo", part, row["other"])))
        else:
            node = ("individual", part, row["individual"])
            known[node] = row["individual"]
            pairs.append((left, node))
    labels = answered_labels(pairs, known)
    rows = []
    for photo, label in sorted(labels.items(), key=lambda item: str(item[0])):
        _, part, path = cast(tuple, photo)  # photo nodes are the (kind, dataset, path) made above
        rows.append({"image_id": path, "path": path, "identity": label, **({"dataset": part} if has_dataset else {})})
    columns = ["image_id", "path", "identity", *(["dataset"] if has_dataset else [])]
    return pd.DataFrame(rows, columns=columns)
