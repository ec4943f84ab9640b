"""What the reviewers' answers in a catalogue teach its gallery: the waiting photos their "same"
answers tie together (decide/answers.py), as ``Gallery.teach`` takes them.

Only photos still waiting count: a photo a reviewer filed is a catalogue photo, in the gallery's
database already. A provisional animal's name carries its dataset, so two datasets' first
answered animals stay two animals even in a gallery that compares across datasets.
"""

from __future__ import annotations

import pandas as pd

from wildreid.catalog.changes import answered_datasets, pair_answers
from wildreid.catalog.store import Catalog
from wildreid.decide.answers import PROVISIONAL, answered_labels
from wildreid.review.pending import UPLOAD, pending_queries


def answered_waiting_photos(catalog: Catalog) -> pd.DataFrame:
    """image_id (upload-<query id>), path, identity, dataset of every waiting photo the answers
    in force label."""
    rows = []
    for dataset in answered_datasets(catalog):
        waiting = {query["id"]: query for query in pending_queries(catalog, dataset)}
        pairs, known = [], {}
        for answer in pair_answers(catalog, dataset):
            if answer["answer"] != "same" or answer["query_id"] not in waiting:
                continue
            if answer["other_query_id"] is not None:
                if answer["other_query_id"] in waiting:
                    pairs.append((answer["query_id"], answer["other_query_id"]))
            else:
                node = f"individual:{answer['individual_id']}"
                known[node] = answer["individual_id"]
                pairs.append((answer["query_id"], node))
        for query_id, label in answered_labels(pairs, known).items():
            rows.append(
                {
                    "image_id": f"{UPLOAD}{query_id}",
                    "path": str(catalog.photo_path(waiting[query_id]["stored_path"])),
                    "identity": f"{label}@{dataset}" if label.startswith(PROVISIONAL) else label,
                    "dataset": dataset,
                }
            )
    return pd.DataFrame(rows, columns=["image_id", "path", "identity", "dataset"])
