"""The bundled data sets: Old Faithful, and the Palmer penguins (with real missing values)."""

import csv
import io
from importlib import resources

import numpy as np

FAITHFUL_COLUMNS = ("eruptions", "waiting")
"""Names of the two columns of :func:`load_faithful` (eruption length and waiting time, in minutes)."""
PENGUINS_COLUMNS = (
    "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "delta_15n", "delta_13c",
)
"""Names of the six columns of :func:`load_penguins`, in order."""


def _read_bundled(name: str, header: tuple) -> list:
    text = resources.files("jaxgmm").joinpath(f"data/{name}").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    if tuple(rows[0]) != header:
        raise RuntimeError(f"bundled {name} has unexpected header {rows[0]}")
    return rows[1:]


def load_faithful() -> np.ndarray:
    """Old Faithful geyser eruptions: a ``(272, 2)`` float64 array.

    Columns are ``eruptions`` (duration, minutes) and ``waiting`` (minutes to
    the next eruption): the same numbers as R's ``datasets::faithful``
    (Härdle 1991; Azzalini & Bowman 1990). The column names are in
    :data:`FAITHFUL_COLUMNS`.

    Examples
    --------
    >>> import jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> X.shape, jaxgmm.FAITHFUL_COLUMNS
    ((272, 2), ('eruptions', 'waiting'))
    """
    return np.array(_read_bundled("faithful.csv", FAITHFUL_COLUMNS), dtype=np.float64)


def load_penguins(*, return_labels: bool = False):
    """The Palmer penguins: six measurements of 344 penguins, with their real missing values as NaN.

    Columns (:data:`PENGUINS_COLUMNS`): bill length and depth (mm), flipper
    length (mm), body mass (g), and the blood's nitrogen and carbon isotope
    ratios δ¹⁵N and δ¹³C (‰). 330 rows are complete; 11 lack both isotope
    ratios ("not enough blood for isotopes"), 1 lacks δ¹⁵N, and 2 lack
    every measurement.

    Data: Gorman, Williams & Fraser (2014), Palmer Station Antarctica LTER,
    released under CC0; taken from the ``penguins_raw`` table of the
    palmerpenguins package (Horst, Hill & Gorman 2020), whose cleaned
    ``penguins`` table has the same first four columns.

    Parameters
    ----------
    return_labels : bool
        Also return each penguin's species (Adelie, Chinstrap, Gentoo) and
        island, as two ``(344,)`` string arrays.

    Returns
    -------
    X : ndarray, shape (344, 6), float64
    species, island : ndarray of str, shape (344,)
        With ``return_labels=True``.

    Examples
    --------
    >>> X = load_penguins()
    >>> X.shape, int(np.isnan(X).sum()), int(np.isnan(X).any(axis=1).sum())
    ((344, 6), 35, 14)
    """
    rows = _read_bundled("penguins.csv", ("species", "island") + PENGUINS_COLUMNS)
    X = np.array([[np.nan if v == "NA" else float(v) for v in row[2:]] for row in rows])
    if not return_labels:
        return X
    return X, np.array([row[0] for row in rows]), np.array([row[1] for row in rows])
