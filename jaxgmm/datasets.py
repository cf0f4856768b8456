"""The bundled demo data set."""

import csv
import io
from importlib import resources

import numpy as np

FAITHFUL_COLUMNS = ("eruptions", "waiting")


def load_faithful() -> np.ndarray:
    """Old Faithful geyser eruptions: a ``(272, 2)`` float64 array.

    Columns are ``eruptions`` (duration, minutes) and ``waiting`` (minutes to
    the next eruption): the same numbers as R's ``datasets::faithful``
    (Härdle 1991; Azzalini & Bowman 1990). The column names are in
    :data:`FAITHFUL_COLUMNS`.
    """
    text = resources.files("jaxgmm").joinpath("data/faithful.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    if tuple(rows[0]) != FAITHFUL_COLUMNS:
        raise RuntimeError(f"bundled faithful.csv has unexpected header {rows[0]}")
    return np.array(rows[1:], dtype=np.float64)
