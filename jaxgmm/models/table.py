"""The table of covariance models: scikit-learn's four and mclust's fourteen.

mclust (Fraley & Raftery; Celeux & Govaert 1995) writes each component's
covariance through its eigen-decomposition ``Σ_k = λ_k D_k A_k D_kᵀ`` —
volume ``λ_k = |Σ_k|^(1/D)``, shape ``A_k`` (diagonal, ``|A_k| = 1``),
orientation ``D_k`` (orthogonal) — and names a model by three letters for
them: **E**\\ qual across components, **V**\\ ariable, or **I**\\ dentity.

======  ===========================  =========================  ===========  ============
model   Σ_k                          free covariance parameters  M-step       stored as
======  ===========================  =========================  ===========  ============
EII     λ I                          1                           closed form  spherical
VII     λ_k I                        K                           closed form  spherical
EEI     λ A                          D                           closed form  diag
VEI     λ_k A                        K + D − 1                   iterative    diag
EVI     λ A_k                        1 + K(D − 1)                closed form  diag
VVI     λ_k A_k                      K·D                         closed form  diag
EEE     λ D A Dᵀ                     D(D+1)/2                    closed form  tied
VEE     λ_k D A Dᵀ                   K + D(D+1)/2 − 1            iterative    full
EVE     λ D A_k Dᵀ                   1 + K(D−1) + D(D−1)/2       iterative    full
VVE     λ_k D A_k Dᵀ                 K·D + D(D−1)/2              iterative    full
EEV     λ D_k A D_kᵀ                 1 + (D−1) + K·D(D−1)/2      closed form  full
VEV     λ_k D_k A D_kᵀ               K + (D−1) + K·D(D−1)/2      iterative    full
EVV     λ D_k A_k D_kᵀ               1 + K(D(D+1)/2 − 1)         closed form  full
VVV     λ_k D_k A_k D_kᵀ             K·D(D+1)/2                  closed form  full
======  ===========================  =========================  ===========  ============

scikit-learn's names are aliases with one implementation each: ``full`` =
VVV, ``tied`` = EEE, ``diag`` = VVI, ``spherical`` = VII; for one feature
mclust's ``E`` and ``V`` are EII and VII. Everything that differs between
models lives in its :class:`CovarianceModel`; the rest of jaxgmm asks the
entry (:func:`get_model`), never the name.
"""

import dataclasses
from typing import Callable

import numpy as np

from jaxgmm.models import eigen, msteps
from jaxgmm.models.priors import MAP_RULES, PriorRule
from jaxgmm.models.names import ALL_COVARIANCE_TYPES, COVARIANCE_MODELS, COVARIANCE_TYPES, UNIVARIATE_MODELS
from jaxgmm.models.storage import DIAG, FULL, SPHERICAL, TIED, Storage

_ALIASES = {"full": "VVV", "tied": "EEE", "diag": "VVI", "spherical": "VII", "E": "EII", "V": "VII"}
_ITERATIVE = frozenset({"VEI", "VEE", "EVE", "VVE", "VEV"})
# The four models whose constrained estimate is the layout's own maximum-likelihood covariance.
_LAYOUT_ESTIMATE = {"VVV": FULL, "EEE": TIED, "VVI": DIAG, "VII": SPHERICAL}


def _count(letter: str, per_component: int, n_components: int) -> int:
    return {"I": 0, "E": per_component, "V": n_components * per_component}[letter]


@dataclasses.dataclass(frozen=True)
class CovarianceModel:
    """One covariance model: its storage, M-step, parameter count, coordinates and checks.

    Attributes
    ----------
    name : str
        The name the user gave (``"VEV"``, or an alias such as ``"full"``).
    letters : str
        mclust's three letters for volume, shape and orientation (``"VVV"`` for ``full``).
    storage : Storage
        The layout of the covariances (``full``, ``tied``, ``diag``, ``spherical``).
    iterative : bool
        Whether the M-step runs an inner loop (VEI, VEE, EVE, VVE, VEV).
    prior_rule : jaxgmm.models.priors.PriorRule or None
        How a conjugate prior enters the M-step (mclust's ``priorControl()``,
        :mod:`jaxgmm.models.priors`); ``None`` where mclust has no prior (VEE, EVE, VVE, EVV).

    Examples
    --------
    >>> from jaxgmm.models import get_model
    >>> full = get_model("full")                               # scikit-learn's name for VVV
    >>> full.letters, full.storage.kind, full.iterative
    ('VVV', 'full', False)
    >>> get_model("VEV").iterative                             # its M-step runs an inner loop
    True
    """

    name: str
    letters: str
    storage: Storage
    iterative: bool
    _update: Callable | None = dataclasses.field(default=None, repr=False)
    prior_rule: PriorRule | None = None

    @property
    def univariate_only(self) -> bool:
        """mclust's ``E``/``V``: defined for one feature only."""
        return self.name in UNIVARIATE_MODELS

    @property
    def layout_estimate(self) -> bool:
        """Whether the M-step is the layout's own ML covariance (scikit-learn's four)."""
        return self._update is None

    def n_covariance_parameters(self, n_components: int, n_features: int) -> int:
        """Free covariance parameters: mclust's ``nVarParams``."""
        k, d = int(n_components), int(n_features)
        volume, shape, orientation = self.letters
        return (
            _count(volume, 1, k) + _count(shape, d - 1, k) + _count(orientation, d * (d - 1) // 2, k)
        )

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """All free parameters: covariances, ``K·D`` means and ``K − 1`` weights."""
        k, d = int(n_components), int(n_features)
        return self.n_covariance_parameters(k, d) + k * d + k - 1

    # --- the M-step -----------------------------------------------------------------------

    def covariance_m_step(self, counts, ml_covariances, n_features: int, reg_covar, previous, inner_tol,
                          inner_max_iter):
        """The model's covariances from the layout's ML estimate ``ml_covariances``.

        ``counts (K,)`` are the (``10·eps``-guarded) component counts;
        ``previous`` the covariances the E-step used (warm start of the
        iterative M-steps; ``None`` starts from the unconstrained estimate).
        ``reg_covar`` enters as ``n_k·reg_covar·I`` added to each scatter
        matrix before the constrained maximisation, so the result keeps the
        model's structure exactly (for the four layout estimates this is
        ``Σ + reg_covar·I``, scikit-learn's rule).
        """
        regularised = self.storage.add_to_diagonal(ml_covariances, reg_covar)
        if self._update is None:
            return regularised
        if previous is None:
            previous = regularised
        if self.storage is SPHERICAL:
            return self._update(counts * n_features * regularised, counts, n_features=n_features)
        count_shape = counts[:, None] if self.storage is DIAG else counts[:, None, None]
        return self._update(count_shape * regularised, counts, previous,
                            inner_tol=inner_tol, inner_max_iter=inner_max_iter)

    # --- unconstrained coordinates (gradient fits) ----------------------------------------

    @property
    def eigen_coordinates(self) -> bool:
        """Whether gradient fits use the eigen-decomposition coordinates of
        :mod:`jaxgmm.models.eigen` (every model but the four layout estimates, which keep
        the precision's Cholesky factor or log-variances)."""
        return not self.layout_estimate

    def coords_from_covariances(self, covariances, n_components: int, n_features: int):
        if self.eigen_coordinates:
            return eigen.to_coords(self.letters, self.storage.matrices(covariances, n_components, n_features))
        return self.storage.coords_from_covariances(covariances)

    def covariances_from_coords(self, coords, n_components: int, n_features: int):
        if self.eigen_coordinates:
            return self.storage.from_matrices(eigen.from_coords(self.letters, coords, n_components, n_features))
        return self.storage.covariances_from_coords(coords, n_features)

    def precision_cholesky_from_coords(self, coords, n_components: int, n_features: int):
        if self.eigen_coordinates:
            return self.storage.precision_cholesky(self.covariances_from_coords(coords, n_components, n_features))
        return self.storage.precision_cholesky_from_coords(coords, n_features)

    # --- edges (numpy, before tracing) ----------------------------------------------------

    def check_covariances(self, covariances, n_components: int, n_features: int, name: str = "covariances") -> None:
        """Raise ``ValueError`` unless numpy ``covariances`` are valid for this model: positive
        definite, and with the model's structure (equal volumes, shapes, orientations) to 1e-6."""
        covariances = np.asarray(covariances, dtype=np.float64)
        self.storage.check_positive_definite(covariances, name, self.name)
        if self.layout_estimate:
            return
        k, d = n_components, n_features
        problem = eigen.structure_error(self.letters, self.storage.matrices(covariances, k, d))
        if problem is not None:
            raise ValueError(f"{name} do not have the structure of covariance_type={self.name!r}: {problem}")

    def check_prior_supported(self) -> "jaxgmm.models.priors.PriorRule":
        """The model's :class:`~jaxgmm.models.priors.PriorRule`, or ``ValueError`` where it takes no conjugate prior."""
        if self.prior_rule is None:
            supported = ", ".join(sorted(MAP_RULES))
            raise ValueError(
                f"covariance_type={self.name!r} takes no conjugate prior: mclust defines none for VEE, EVE, VVE "
                f"and EVV, and neither does jaxgmm (models with one: {supported} and scikit-learn's four)."
            )
        return self.prior_rule

    def check_n_features(self, n_features: int) -> None:
        if self.univariate_only and n_features != 1:
            raise ValueError(
                f"covariance_type={self.name!r} is mclust's one-feature model; the data have {n_features} "
                f"features (use {_ALIASES[self.name]!r})."
            )


def _build_table() -> dict:
    table = {}
    for name in ALL_COVARIANCE_TYPES:
        letters = _ALIASES.get(name, name)
        if letters in _LAYOUT_ESTIMATE:
            storage, update = _LAYOUT_ESTIMATE[letters], None
        else:
            storage = {"II": SPHERICAL, "EI": DIAG, "VI": DIAG}.get(letters[1:], FULL)
            update = msteps.MSTEPS[letters]
        table[name] = CovarianceModel(name, letters, storage, letters in _ITERATIVE, update, MAP_RULES.get(letters))
    return table


MODELS = _build_table()
"""Every accepted ``covariance_type`` (scikit-learn's four, mclust's 14, ``E``, ``V``) → its :class:`~jaxgmm.models.CovarianceModel`."""


def get_model(covariance_type: str) -> CovarianceModel:
    """The :class:`~jaxgmm.models.CovarianceModel` of a name, or ``ValueError`` listing the valid names.

    Examples
    --------
    >>> get_model("VEV").n_covariance_parameters(3, 2)  # K + (D − 1) + K·D(D − 1)/2
    7
    >>> get_model("full").letters, get_model("full").storage.kind
    ('VVV', 'full')
    """
    try:
        return MODELS[covariance_type]
    except (KeyError, TypeError):
        raise ValueError(
            f"Invalid covariance_type {covariance_type!r}: expected one of scikit-learn's "
            f"{COVARIANCE_TYPES}, mclust's {COVARIANCE_MODELS}, or 'E'/'V' for one feature."
        ) from None
