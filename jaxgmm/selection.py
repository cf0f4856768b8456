"""Choosing the number of components and the covariance model: BIC, ICL, AIC and :func:`select`.

Signs follow scikit-learn: ``bic = −2ℓ + p log n`` and ``aic = −2ℓ + 2p``,
lower is better (mclust reports ``2ℓ − p log n``, higher is better: the same
number with the sign flipped, see :meth:`Selection.criterion_table`). The
integrated completed likelihood of Biernacki, Celeux & Govaert (2000), as
mclust's ``icl()``, adds twice the entropy of the hard assignment,
``icl = bic − 2 Σ_n log τ_{n, ẑ_n}`` with ``τ`` the responsibilities and
``ẑ_n`` each row's most probable component, so it penalises overlapping
components.
"""

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgmm import missing_kernels
from jaxgmm.density import score, weighted_log_prob
from jaxgmm.incomplete import IncompleteData, check_missing_option
from jaxgmm.models import COVARIANCE_MODELS, get_model
from jaxgmm.params import GMMParams, n_parameters
from jaxgmm.validation import check_array, check_sample_weight

CRITERIA = ("bic", "icl", "aic")


def bic(params: GMMParams, X: jax.Array) -> jax.Array:
    r"""Bayesian information criterion, ``-2 log L + p log N`` (lower is better).

    ``X (N, D)``; ``p`` is :func:`jaxgmm.n_parameters`. Same definition as
    scikit-learn's ``GaussianMixture.bic`` (and minus mclust's BIC).

    See Also
    --------
    aic, icl : the other criteria.
    jaxgmm.select : the criterion over covariance models and numbers of components.

    Notes
    -----
    .. math::

       \mathrm{BIC} = -2 \log L + p \log N, \qquad \log L = \sum_n \log p(x_n)

    Examples
    --------
    >>> import jax, numpy as np, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> params = jaxgmm.fit(jax.random.key(0), X, 2).params
    >>> n, p = len(X), jaxgmm.n_parameters("full", 2, 2)          # 272 rows, 11 parameters
    >>> ll = float(jaxgmm.score(params, X)) * n                   # the summed log-likelihood
    >>> bool(np.isclose(float(jaxgmm.bic(params, X)), -2 * ll + p * np.log(n), rtol=1e-5))
    True
    """
    n_samples = X.shape[0]
    return -2 * score(params, X) * n_samples + n_parameters(params) * math.log(n_samples)


def aic(params: GMMParams, X: jax.Array) -> jax.Array:
    r"""Akaike information criterion, ``-2 log L + 2p`` (lower is better); ``X (N, D)``.

    See Also
    --------
    bic, icl : the other criteria.

    Notes
    -----
    .. math::

       \mathrm{AIC} = -2 \log L + 2p

    Examples
    --------
    >>> import jax, numpy as np, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> params = jaxgmm.fit(jax.random.key(0), X, 2).params
    >>> ll = float(jaxgmm.score(params, X)) * len(X)
    >>> bool(np.isclose(float(jaxgmm.aic(params, X)), -2 * ll + 2 * jaxgmm.n_parameters("full", 2, 2), rtol=1e-5))
    True
    """
    return -2 * score(params, X) * X.shape[0] + 2 * n_parameters(params)


def classification_entropy(params: GMMParams, X: jax.Array, sample_weight=None) -> jax.Array:
    """``−Σ_n w_n log τ_{n, ẑ_n}``: the entropy term of ICL, ≥ 0; ``X (N, D)``, optional weights ``(N,)``.

    ``τ_nk`` are the responsibilities and ``ẑ_n = argmax_k τ_nk``; computed in
    log space (``log τ_{n, ẑ_n} = max_k log τ_nk``).
    """
    return _entropy_from(weighted_log_prob(params, X), sample_weight)


def _entropy_from(wlp: jax.Array, sample_weight=None) -> jax.Array:
    """:func:`classification_entropy` from the weighted log-densities ``(N, K)``."""
    per_row = -jnp.max(jax.nn.log_softmax(wlp, axis=-1), axis=-1)
    if sample_weight is None:
        return jnp.sum(per_row)
    sample_weight = jnp.asarray(sample_weight, per_row.dtype)
    return jnp.sum(jnp.where(sample_weight > 0, sample_weight * per_row, 0.0))


def icl(params: GMMParams, X: jax.Array) -> jax.Array:
    r"""Integrated completed likelihood (lower is better): ``bic + 2 · classification_entropy``.

    mclust's ``icl()`` with scikit-learn's sign; ``X (N, D)``.

    See Also
    --------
    bic : without the entropy term.
    jaxgmm.select : ``criterion="icl"`` over a grid of models.

    Notes
    -----
    With :math:`\hat z_n` the most probable component of row :math:`n` and
    :math:`\tau_{nk}` the responsibilities:

    .. math::

       \mathrm{ICL} = \mathrm{BIC} - 2 \sum_n \log \tau_{n \hat z_n}

    Examples
    --------
    >>> import jax, jaxgmm
    >>> X = jaxgmm.load_faithful()
    >>> params = jaxgmm.fit(jax.random.key(0), X, 2).params
    >>> bool(jaxgmm.icl(params, X) >= jaxgmm.bic(params, X))
    True
    """
    return bic(params, X) + 2 * classification_entropy(params, X)


class SelectionCell(NamedTuple):
    """One (covariance model, K) cell of :attr:`Selection.table`.

    Criteria use scikit-learn's sign (lower is better); ``n`` is the number
    of rows (the sum of the weights where ``sample_weight`` was given). A
    failed cell (its fit raised, or every restart became non-finite) has NaN
    numbers and the reason in ``failed``; it never wins.

    Examples
    --------
    >>> import jax, jaxgmm
    >>> sel = jaxgmm.select(jax.random.key(0), jaxgmm.load_faithful(), [1, 2, 3], ["EEE", "VVV"], n_init=2)
    >>> cell = sel.best
    >>> cell.failed is None, bool(cell.bic <= cell.icl)        # ICL adds the entropy penalty to BIC
    (True, True)
    """

    covariance_type: str
    n_components: int
    log_likelihood: float  # total Σ_n w_n log p(x_n) of the returned parameters
    n_parameters: int
    bic: float
    icl: float
    aic: float
    converged: bool
    failed: str | None


class Selection(NamedTuple):
    """What :func:`select` returns.

    Attributes
    ----------
    best : SelectionCell
        The cell with the lowest criterion among those that did not fail.
    params : GMMParams
        The best cell's fitted parameters.
    table : list of SelectionCell
        One row per (model, K), models in the order given, K ascending.
    fits : dict
        ``fits[(covariance_type, K)]`` is the cell's :class:`~jaxgmm.FitResult`
        (``None`` for a failed or skipped cell).
    criterion : str
        ``"bic"``, ``"icl"`` or ``"aic"``.

    Examples
    --------
    >>> import jax, jaxgmm
    >>> sel = jaxgmm.select(jax.random.key(0), jaxgmm.load_faithful(), [1, 2, 3], ["EEE", "VVV"], n_init=2)
    >>> sel.criterion, sel.best.bic == min(cell.bic for cell in sel.table if cell.failed is None)
    ('bic', True)
    >>> sel.fits[("VVV", 2)].params.means.shape              # every cell's fit
    (2, 2)
    """

    best: SelectionCell
    params: GMMParams
    table: list
    fits: dict
    criterion: str

    @property
    def covariance_types(self) -> list:
        return list(dict.fromkeys(cell.covariance_type for cell in self.table))

    @property
    def n_components(self) -> list:
        return sorted({cell.n_components for cell in self.table})

    def criterion_table(self, criterion: str | None = None, *, sign: str = "sklearn") -> np.ndarray:
        """``(len(covariance_types), len(n_components))`` values of a criterion, NaN where failed.

        ``sign="mclust"`` flips it to mclust's convention (``2ℓ − p log n``,
        higher is better), as mclust's ``mclustBIC`` prints it.
        """
        criterion = _check_criterion(criterion or self.criterion)
        if sign not in ("sklearn", "mclust"):
            raise ValueError(f"sign must be 'sklearn' or 'mclust'; got {sign!r}.")
        models, ks = self.covariance_types, self.n_components
        out = np.full((len(models), len(ks)), np.nan)
        for cell in self.table:
            out[models.index(cell.covariance_type), ks.index(cell.n_components)] = getattr(cell, criterion)
        return -out if sign == "mclust" else out

    def ranked(self) -> list:
        """Cells that did not fail, best first (by the selection's criterion)."""
        ok = [cell for cell in self.table if cell.failed is None]
        return sorted(ok, key=lambda cell: getattr(cell, self.criterion))


def _check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"Invalid criterion {criterion!r}: expected one of {CRITERIA}.")
    return criterion


def _cell(covariance_type, k, total, entropy, result, n_features, n_rows) -> SelectionCell:
    """A cell from its fit's total log-likelihood and ICL entropy (:func:`_cell_numbers`)."""
    total, entropy = float(total), float(entropy)
    p = n_parameters(covariance_type, k, n_features)
    bic_value = -2 * total + p * math.log(n_rows)
    failed = None if math.isfinite(total) else "the log-likelihood is not finite"
    return SelectionCell(covariance_type, k, total, p, bic_value, bic_value + 2 * entropy, -2 * total + 2 * p,
                         bool(result.converged), failed)


def _failed_cell(covariance_type, k, n_features, reason) -> SelectionCell:
    nan = float("nan")
    return SelectionCell(covariance_type, k, nan, n_parameters(covariance_type, k, n_features), nan, nan, nan,
                         False, reason)


def select(
    key: jax.Array,
    X,
    n_components: Sequence[int] = range(1, 10),
    covariance_types: Sequence[str] = COVARIANCE_MODELS,
    *,
    criterion: str = "bic",
    n_init: int = 4,
    init: str = "kmeans",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    sample_weight=None,
    progress=None,
    missing: str = "raise",
    prior=None,
) -> Selection:
    """Fit every (covariance model, K) and choose by BIC, ICL or AIC, as mclust's ``Mclust()``.

    Every cell is a real fit with its restarts, the same ``key`` for every
    cell, so a cell equals ``fit(key, X, K, covariance_type=model, ...)``
    alone (to rounding). All K of a model run in **one compiled program**:
    ``max(K)`` component slots, those from ``K`` on switched off (weight
    exactly 0, which EM keeps; see :func:`jaxgmm.m_step`), so a grid
    compiles once per model, not once per cell, and running it again on
    data of the same shape recompiles nothing. A cell whose fit fails (its
    log-likelihood became non-finite) is marked failed with the reason and
    never wins; K larger than the number of rows is skipped (failed, as
    mclust leaves it out).

    Parameters
    ----------
    key : PRNG key
    X : array-like, shape (N, D)
    n_components : sequence of int
        The K to try (default 1..9, mclust's).
    covariance_types : sequence of str
        Models to try (default mclust's 14; any of :data:`jaxgmm.COVARIANCE_TYPES`
        too).
    criterion : {"bic", "icl", "aic"}
        Lower is better (scikit-learn's sign).
    n_init, init, max_iter, tol, reg_covar : as :func:`jaxgmm.fit`.
        ``init="hc"`` starts every cell from mclust's model-based
        hierarchical clustering (:mod:`jaxgmm.hc`) instead, one start per
        cell, as ``Mclust()`` does.
    sample_weight : array-like, shape (N,), optional
        The criteria then use the weighted log-likelihood and ``n = Σ w``.
    progress : callable, optional
        Called as ``progress(done, total, covariance_type, K)`` after each cell.
    missing : {"raise", "marginalize"}
        ``"marginalize"``: NaN entries are missing values (see
        :func:`jaxgmm.fit`); the criteria use the observed-data
        log-likelihood and ``n`` the rows with an observed value.
        ``init="hc"`` needs complete data.
    prior : ConjugatePrior or "default", optional
        MAP-EM in every cell (mclust's ``Mclust(prior = priorControl())``):
        ``"default"`` gives each cell mclust's :func:`jaxgmm.default_prior`
        for its model and K; a :class:`jaxgmm.ConjugatePrior` is used for
        every cell (its scale reduced to each model's layout). The criteria
        are then mclust's "BIC at the MAP estimate": the log-likelihood of
        the MAP parameters with the same parameter count. VEE, EVE, VVE and
        EVV take no prior: their cells are marked failed with the reason.

    Returns
    -------
    Selection

    Examples
    --------
    >>> import jax, jaxgmm
    >>> sel = jaxgmm.select(jax.random.key(0), jaxgmm.load_faithful(), [1, 2, 3], ["EEE", "VVV"], n_init=2)
    >>> len(sel.table), sel.criterion_table().shape          # (models, K)
    (6, (2, 3))
    >>> sel.best == sel.ranked()[0]
    True
    """
    criterion = _check_criterion(criterion)
    ks = [int(k) for k in n_components]
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"n_components must be a non-empty sequence of integers >= 1; got {list(n_components)!r}.")
    models = list(covariance_types)
    if not models:
        raise ValueError("covariance_types is empty.")
    for model in models:
        get_model(model)
    from jaxgmm.fit import _refuse_missing_with_prior, lay_out_missing

    X = check_array(X, missing=check_missing_option(missing))
    if prior is not None:
        _refuse_missing_with_prior(X)
    n_rows, n_features = X.shape
    weights = None if sample_weight is None else check_sample_weight(sample_weight, n_rows, X.dtype)
    layouts = {}
    if missing == "marginalize" and np.isnan(np.asarray(X)).any():
        if init == "hc":
            raise ValueError("init='hc' needs complete data; use an init method with missing='marginalize'.")
        for model in models:  # one layout per kind of covariance storage
            storage = get_model(model).storage.is_matrix
            if storage not in layouts:
                layouts[storage] = lay_out_missing(X, weights, model, missing)[0]
        observed = np.asarray(next(iter(layouts.values())).any_observed())
        row_weights = np.ones(n_rows) if weights is None else np.asarray(weights, np.float64)
        n_effective, n_positive = float(np.sum(row_weights[observed])), int(np.count_nonzero(row_weights[observed]))
    else:
        n_effective = n_rows if weights is None else float(np.sum(np.asarray(weights, np.float64)))
        n_positive = n_rows if weights is None else int(np.count_nonzero(np.asarray(weights) > 0))
    tree = _hc_tree(X) if init == "hc" else None
    table, fits = [], {}
    total, done = len(models) * len(ks), 0
    for model in models:
        try:
            get_model(model).check_n_features(n_features)
            usable = [k for k in ks if k <= n_positive]
            starts = None if tree is None else _hc_starts(X, usable, model, tree)
            data = layouts.get(get_model(model).storage.is_matrix)
            results, numbers = _fit_grid(key, X if data is None else data, None if data is not None else weights,
                                         usable, model, n_init=1 if starts else n_init,
                                         init="kmeans" if starts else init, max_iter=max_iter, tol=tol,
                                         reg_covar=reg_covar, starts=starts, prior=prior)
            reasons = {}
        except ValueError as error:  # the model cannot be fitted at all (mclust's E/V on several features)
            results, reasons = {}, {k: str(error) for k in ks}
        for k in ks:
            result = results.get(k)
            if result is None:
                if k in results:
                    reasons[k] = ("the log-likelihood became non-finite (a component collapsed onto a point or "
                                  "a subspace); increase reg_covar")
                cell = _failed_cell(model, k, n_features, reasons.get(
                    k, f"K = {k} is larger than the {n_positive} rows with positive weight"))
            else:
                cell = _cell(model, k, *numbers[k], result, n_features, n_effective)
            table.append(cell)
            fits[(model, k)] = result if cell.failed is None else None
            done += 1
            if progress is not None:
                progress(done, total, model, k)
    ok = [cell for cell in table if cell.failed is None]
    if not ok:
        raise ValueError(f"every fit of the grid failed; the first: {table[0].failed}")
    best = min(ok, key=lambda cell: getattr(cell, criterion))
    return Selection(best, fits[(best.covariance_type, best.n_components)].params, table, fits, criterion)


def _first_components(params: GMMParams, k: int) -> GMMParams:
    """The first ``k`` components of parameters with any leading batch axes (the rest have weight 0)."""
    storage = params.model.storage
    component_axis = params.covariances.ndim - len(storage.shape(1, params.n_features))
    take = (lambda a: a) if not storage.per_component else (
        lambda a: a[(slice(None),) * component_axis + (slice(0, k),)])  # numpy or JAX
    return GMMParams(params.weights[..., :k], params.means[..., :k, :], take(params.covariances),
                     params.covariance_type)


def _priors_for(prior, X, weights, ks, model):
    """Each K's validated prior stacked on a leading axis (``"default"``: mclust's for the model and K), or None."""
    from jaxgmm.conjugate import stack_priors
    from jaxgmm.fit import resolve_prior

    if prior is None or not ks:
        return None
    return stack_priors([resolve_prior(prior, X, k, model, weights) for k in ks], X.dtype)


def _fit_grid(key, X, weights, ks, model, *, n_init, init, max_iter, tol, reg_covar, starts=None, prior=None):
    """Every K of one model in one compiled program (the slots from K on switched off): ``{K: FitResult}``
    (``None`` where non-finite) and ``{K: (total log-likelihood, ICL entropy)}``.

    The same restarts as ``fit(key, X, K, ...)``: the same keys, and random draws keyed per component,
    so each cell is that fit (to rounding: the E-step's form can depend on the number of slots).
    """
    from jaxgmm.fit import _check_options, _fit_each_k

    if not ks:
        return {}, {}
    for k in ks:
        _check_options(k, model, n_init, init, max_iter, tol, reg_covar)
    k_max = max(ks)
    start_resp = None
    if starts is not None:  # each K's responsibilities, zero-padded to k_max slots
        start_resp = jnp.asarray(np.stack([np.pad(starts[k], ((0, 0), (0, k_max - k))) for k in ks]), X.dtype)
    stacked = _fit_each_k(
        jax.random.split(key, n_init), X, weights, jnp.asarray(ks, jnp.int32), start_resp, n_components=k_max,
        covariance_type=model, init=init, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
        priors=_priors_for(prior, X, weights, ks, model),
    )
    if isinstance(X, IncompleteData):
        totals, entropies = (np.asarray(a) for a in _cell_numbers_incomplete(stacked.params, X))
    else:
        w = jnp.ones(X.shape[0], X.dtype) if weights is None else weights
        totals, entropies = (np.asarray(a)[0] for a in _cell_numbers(
            jax.tree.map(lambda leaf: leaf[None], stacked.params), X[None], w[None]))
    stacked = jax.device_get(stacked)  # slicing on the host: one transfer instead of a dispatch per leaf and K
    results = []
    for i, k in enumerate(ks):
        cell = jax.tree.map(lambda leaf: leaf[i], stacked)
        restarts = cell.restarts._replace(params=_first_components(cell.restarts.params, k))
        results.append(cell._replace(params=_first_components(cell.params, k), restarts=restarts))
    results = jax.device_put(results)  # back to JAX arrays, all leaves in one call
    out = {k: result if np.isfinite(result.log_likelihood) else None for k, result in zip(ks, results)}
    return out, {k: (totals[i], entropies[i]) for i, k in enumerate(ks)}


def _hc_tree(X):
    """mclust's hierarchical clustering tree of ``X`` (``init="hc"``), built once for every cell."""
    from jaxgmm import hc

    return hc.hc_start(np.asarray(X, np.float64))


def _hc_starts(X, ks, model, tree) -> dict:
    """Each K's starting responsibilities from the tree, as ``mclustBIC`` (on a subset of more than
    2,000 rows they come from one M-step of ``model`` and an E-step on all rows)."""
    from jaxgmm import hc

    X = np.asarray(X, np.float64)
    return {k: hc.hc_responsibilities(X, k, covariance_type=model, start=tree, n_slots=max(ks)) for k in ks}


# --------------------------------------------------------------------------- many data sets


class ManySelection(NamedTuple):
    """What :func:`select_many` returns: one model choice per data set.

    Attributes
    ----------
    covariance_types : list of str
        The ``M`` models tried, in the order given.
    n_components : list of int
        The ``K`` tried, ascending.
    criterion : str
        ``"bic"``, ``"icl"`` or ``"aic"`` (lower is better).
    log_likelihood, bic, icl, aic : ndarray, shape (B, M, len(n_components))
        Every cell of every data set (total weighted log-likelihood of the
        returned parameters, and the criteria from it); NaN where the cell
        failed or was skipped (K larger than the data set's rows).
    n_parameters : ndarray of int, shape (B, M, len(n_components))
    converged : ndarray of bool, shape (B, M, len(n_components))
    fits : dict
        ``fits[(covariance_type, K)]`` is a :class:`~jaxgmm.FitResult` with a
        leading ``(B,)`` axis (``None`` where the model could not be fitted).
    best_covariance_type : list of str
        Each data set's chosen model (length ``B``).
    best_n_components : ndarray of int, shape (B,)
    best_params : list of GMMParams
        Each data set's chosen parameters, with its own ``K``.

    Examples
    --------
    >>> import jax, numpy as np, jaxgmm
    >>> rng = np.random.default_rng(0)
    >>> one, two = rng.normal(size=(200, 2)), np.concatenate([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 8])
    >>> X, w = jaxgmm.pad_datasets([one, two])
    >>> many = jaxgmm.select_many(jax.random.key(0), X, [1, 2, 3], ["VII", "VVV"], sample_weight=w, n_init=2)
    >>> many.best_covariance_type, many.best_n_components.tolist()
    (['VII', 'VII'], [1, 2])
    >>> many.selection(1).best.n_components                  # data set 1's grid, as select gives it
    2
    """

    covariance_types: list
    n_components: list
    criterion: str
    log_likelihood: np.ndarray
    n_parameters: np.ndarray
    bic: np.ndarray
    icl: np.ndarray
    aic: np.ndarray
    converged: np.ndarray
    fits: dict
    best_covariance_type: list
    best_n_components: np.ndarray
    best_params: list

    def selection(self, b: int) -> Selection:
        """Data set ``b``'s grid as a :class:`Selection` (what :func:`select` returns for it alone)."""
        table = []
        for m, model in enumerate(self.covariance_types):
            for i, k in enumerate(self.n_components):
                ll = float(self.log_likelihood[b, m, i])
                failed = None if math.isfinite(ll) else (
                    "skipped or failed: K is larger than the rows with positive weight, or the log-likelihood "
                    "became non-finite")
                table.append(SelectionCell(model, k, ll, int(self.n_parameters[b, m, i]), float(self.bic[b, m, i]),
                                           float(self.icl[b, m, i]), float(self.aic[b, m, i]),
                                           bool(self.converged[b, m, i]), failed))
        fits = {cell: None if fit is None or not math.isfinite(self.log_likelihood[(b,) + self._index(cell)])
                else jax.tree.map(lambda leaf: leaf[b], fit) for cell, fit in self.fits.items()}
        best = next(c for c in table if (c.covariance_type, c.n_components) == (
            self.best_covariance_type[b], int(self.best_n_components[b])))
        return Selection(best, self.best_params[b], table, fits, self.criterion)

    def _index(self, cell) -> tuple:
        return self.covariance_types.index(cell[0]), self.n_components.index(cell[1])


@jax.jit
def _cell_numbers(params: GMMParams, X: jax.Array, sample_weight: jax.Array):
    """Total weighted log-likelihood and ICL entropy of fits with leading ``(B, n_k)`` axes on ``X (B, N, D)``."""

    def one(p, x, w):
        wlp = weighted_log_prob(p, x)  # switched-off slots (weight 0) give −inf and drop out
        log_p = jax.nn.logsumexp(wlp, axis=-1)
        return jnp.sum(jnp.where(w > 0, w * log_p, 0.0)), _entropy_from(wlp, w)

    return jax.vmap(jax.vmap(one, in_axes=(0, None, None)))(params, X, sample_weight)


@jax.jit
def _cell_numbers_incomplete(params: GMMParams, data: IncompleteData):
    """:func:`_cell_numbers` of fits with a leading ``(n_k,)`` axis on data with missing values."""
    w = data.scatter_rows([b.weight for b in data.buckets], 0.0)  # 0 for rows observing nothing

    def one(p):
        wlp = missing_kernels.weighted_log_prob(p, data)
        log_p = jax.nn.logsumexp(wlp, axis=-1)
        return jnp.sum(jnp.where(w > 0, w * log_p, 0.0)), _entropy_from(wlp, w)

    return jax.vmap(one)(params)


def select_many(
    key: jax.Array,
    X,
    n_components: Sequence[int] = range(1, 10),
    covariance_types: Sequence[str] = COVARIANCE_MODELS,
    *,
    criterion: str = "bic",
    sample_weight=None,
    n_init: int = 4,
    init: str = "kmeans",
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    batch_size: int | None = None,
) -> ManySelection:
    """:func:`select` for many data sets at once: one best (model, K) per data set.

    Data sets share one shape ``(B, N, D)``; those of different sizes are
    padded with rows of weight 0 (:func:`jaxgmm.pad_datasets`). Each model
    runs as **one compiled program** over every data set and every K (the
    K slots as in :func:`select`, the data sets as in
    :func:`jaxgmm.fit_many`), so data set ``b`` gets what
    ``select(jax.random.split(key, B)[b], X_b, ...)`` gives for its
    unpadded rows (to rounding). A cell with ``K`` larger than a data set's
    rows of positive weight is skipped for that data set, and a cell whose
    fit became non-finite fails; neither wins.

    Parameters
    ----------
    key : PRNG key
        Split into one key per data set.
    X : array-like, shape (B, N, D)
    n_components, covariance_types, criterion : as :func:`select`.
    sample_weight : array-like, shape (B, N), optional
        0 marks padding rows. The criteria use ``n = Σ_n w_bn`` per data set.
    n_init, init, max_iter, tol, reg_covar : as :func:`jaxgmm.fit` (``init="hc"`` is
        :func:`select`'s alone).
    batch_size : int, optional
        Data sets fitted together under ``vmap``; see :func:`jaxgmm.fit_many`.

    Returns
    -------
    ManySelection

    Examples
    --------
    >>> import jax, numpy as np, jaxgmm
    >>> rng = np.random.default_rng(0)
    >>> one, two = rng.normal(size=(200, 2)), np.concatenate([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 8])
    >>> X, w = jaxgmm.pad_datasets([one, two])
    >>> many = jaxgmm.select_many(jax.random.key(0), X, [1, 2, 3], ["VII", "VVV"], sample_weight=w, n_init=2)
    >>> many.best_n_components.tolist(), many.bic.shape      # (data sets, models, K)
    ([1, 2], (2, 2, 3))
    """
    from jaxgmm.fit import _check_key, _check_options, _fit_datasets_each_k, _prepare_datasets

    key = _check_key(key)
    criterion = _check_criterion(criterion)
    ks = sorted({int(k) for k in n_components})
    if not ks or ks[0] < 1:
        raise ValueError(f"n_components must be a non-empty sequence of integers >= 1; got {list(n_components)!r}.")
    models = list(covariance_types)
    if not models:
        raise ValueError("covariance_types is empty.")
    if init == "hc":
        raise ValueError("init='hc' is select()'s alone (mclust's start is computed per data set); use an init method.")
    for model in models:
        _check_options(ks[-1], model, n_init, init, max_iter, tol, reg_covar)
    Xj, weights = _prepare_datasets(X, sample_weight, min_positive=1)
    n_sets, _, n_features = Xj.shape
    w64 = np.asarray(weights, np.float64)
    n_effective, n_positive = w64.sum(axis=1), np.count_nonzero(w64 > 0, axis=1)
    keys = jax.random.split(key, n_sets)
    shape = (n_sets, len(models), len(ks))
    out = {name: np.full(shape, np.nan) for name in ("log_likelihood", "bic", "icl", "aic")}
    out["n_parameters"] = np.broadcast_to(
        np.array([[n_parameters(model, k, n_features) for k in ks] for model in models]), shape).copy()
    converged, fits = np.zeros(shape, bool), {}
    for m, model in enumerate(models):
        try:
            get_model(model).check_n_features(n_features)
        except ValueError:  # mclust's E/V on several features: every cell fails
            fits.update({(model, k): None for k in ks})
            continue
        stacked = _fit_datasets_each_k(keys, Xj, weights, jnp.asarray(ks, jnp.int32), n_components=ks[-1],
                                       covariance_type=model, init=init, n_init=n_init, max_iter=max_iter,
                                       tol=tol, reg_covar=reg_covar, batch_size=batch_size)
        total, entropy = (np.asarray(a, np.float64) for a in _cell_numbers(stacked.params, Xj, weights))
        usable = (np.asarray(ks)[None, :] <= n_positive[:, None]) & np.isfinite(total)
        p = np.array([n_parameters(model, k, n_features) for k in ks], np.float64)
        bic_values = -2 * total + p * np.log(n_effective)[:, None]
        for name, values in (("log_likelihood", total), ("bic", bic_values), ("icl", bic_values + 2 * entropy),
                             ("aic", -2 * total + 2 * p)):
            out[name][:, m] = np.where(usable, values, np.nan)
        converged[:, m] = np.asarray(stacked.converged) & usable
        for i, k in enumerate(ks):
            cell = jax.tree.map(lambda leaf: leaf[:, i], stacked)
            restarts = cell.restarts._replace(params=_first_components(cell.restarts.params, k))
            fits[(model, k)] = cell._replace(params=_first_components(cell.params, k), restarts=restarts)
    values = np.where(np.isnan(out[criterion]), np.inf, out[criterion]).reshape(n_sets, -1)
    if np.isinf(values.min(axis=1)).any():
        b = int(np.flatnonzero(np.isinf(values.min(axis=1)))[0])
        raise ValueError(f"every fit of the grid failed for data set {b}.")
    best = values.argmin(axis=1)
    best_models = [models[i // len(ks)] for i in best]
    best_ks = np.array([ks[i % len(ks)] for i in best])
    best_params = [jax.tree.map(lambda leaf: leaf[b], fits[(m_, int(k))].params)
                   for b, (m_, k) in enumerate(zip(best_models, best_ks))]
    return ManySelection(models, ks, criterion, converged=converged, fits=fits, best_covariance_type=best_models,
                         best_n_components=best_ks, best_params=best_params, **out)


__all__ = ["CRITERIA", "ManySelection", "Selection", "SelectionCell", "aic", "bic", "classification_entropy", "icl",
           "select", "select_many"]
