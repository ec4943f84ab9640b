"""A file of reviewers' answers (`wildreid gallery refit --answers FILE`): one pair question per row.

    photo,other,individual,answer,dataset
    field/0001.jpg,field/0002.jpg,,same,NyalaData
    field/0001.jpg,,nyala-07,same,NyalaData
    field/0003.jpg,field/0004.jpg,,different,NyalaData

``photo``: a photo the gallery does not hold (a query), as a path relative to the file's folder
or absolute; ``other``: a second such photo, or ``individual``: a known individual's identity (one
of the two, not both); ``answer``: ``same``, ``different`` or ``cant_tell``; ``dataset``: the
dataset part, needed only when the gallery holds several. The web app stores the same answers in
the catalogue (catalog/changes.py) and learns from them there.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from wildreid.data.dataset import DatasetError

ANSWERS = ("same", "different", "cant_tell")
COLUMNS = ("photo", "other", "individual", "answer")


def read_answers(path: str | Path) -> pd.DataFrame:
    """The answers of ``path``, checked, with photo paths made absolute (columns photo, other,
    individual, answer and, when given, dataset; blanks as None)."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DatasetError(f"{path}: cannot be read as a CSV file of answers ({error}).") from None
    missing = [column for column in COLUMNS if column not in table]
    if missing:
        raise DatasetError(
            f"{path}: no column {', '.join(missing)}; an answers file has the columns "
            f"{', '.join(COLUMNS)} (and dataset where the gallery holds several)."
        )
    # Plain records, blanks (after trimming) as None: pandas would turn a None among strings into NaN.
    records = [{key: str(value).strip() or None for key, value in row.items()} for row in table.to_dict("records")]
    for line, record in enumerate(records, start=2):  # line 1 is the header
        where = f"{path}, line {line}"
        if record["photo"] is None:
            raise DatasetError(f"{where}: 'photo' is empty; give the path of the photo the answer is about.")
        if (record["other"] is None) == (record["individual"] is None):
            raise DatasetError(
                f"{where}: give either 'other' (a second photo) or 'individual' (a known individual), "
                "exactly one of them."
            )
        if record["answer"] not in ANSWERS:
            raise DatasetError(f"{where}: answer {record['answer']!r}; give one of {', '.join(ANSWERS)}.")
        for column in ("photo", "other"):
            given = record[column]
            if given is not None:
                record[column] = str(_absolute(given, path.parent))
    return pd.DataFrame(records, columns=list(table.columns), dtype=object)


def _absolute(value: str, folder: Path) -> Path:
    given = Path(value).expanduser()
    return given if given.is_absolute() else (folder / given).resolve()
