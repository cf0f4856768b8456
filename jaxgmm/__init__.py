"""jaxgmm: Gaussian mixture models fitted by expectation–maximisation in JAX.

Core (pure, jit/vmap/grad-safe): :class:`GMMParams`, :func:`e_step`,
:func:`m_step`, :func:`em_loop`, the log-densities and the initialisers.
Drivers (validate input at the edge): :func:`fit` with parallel restarts and
:func:`fit_many` for many data sets in one call; MAP-EM with ``prior=``
(:class:`ConjugatePrior`) and variational Bayes (:func:`fit_vb`, :mod:`jaxgmm.vb`).
"""

from jaxgmm.compare import Comparison, MethodTrace, compare
from jaxgmm.compilation_cache import enable_compilation_cache
from jaxgmm.conjugate import ConjugatePrior, default_prior, log_prior
from jaxgmm.datasets import FAITHFUL_COLUMNS, PENGUINS_COLUMNS, load_faithful, load_penguins
from jaxgmm.density import log_prob, predict, predict_proba, score, score_samples, weighted_log_prob
from jaxgmm.em import EMResult, SuffStats, e_step, em_loop, m_step, stats_from_responsibilities
from jaxgmm.fit import FitResult, default_batch_size, fit, fit_many, pad_datasets
from jaxgmm.gradient import GradientResult, fit_gradient, log_likelihood, q_function
from jaxgmm.io import load, save
from jaxgmm.imputation import impute, sample_missing
from jaxgmm.incomplete import IncompleteData
from jaxgmm.init import INIT_METHODS, initial_responsibilities, initialize, kmeans, kmeans_plusplus
from jaxgmm.online import OnlineResult, OnlineState, fit_online, online_init, online_update
from jaxgmm.params import COVARIANCE_MODELS, COVARIANCE_TYPES, GMMParams, n_parameters
from jaxgmm.sampling import sample
from jaxgmm.selection import ManySelection, Selection, SelectionCell, aic, bic, icl, select, select_many
from jaxgmm.streaming import StreamProgress, fit_stream, stream_e_step
from jaxgmm.unconstrained import UnconstrainedParams, from_unconstrained, to_unconstrained
from jaxgmm.vb import (
    VBFitResult,
    VBPosterior,
    VBResult,
    bayesian_mixture_prior,
    effective_n_components,
    elbo,
    fit_vb,
    fit_vb_many,
    vb_e_step,
    vb_initialize,
    vb_loop,
    vb_m_step,
)

__version__ = "0.1.0"

__all__ = [
    "COVARIANCE_MODELS",
    "COVARIANCE_TYPES",
    "Comparison",
    "ConjugatePrior",
    "EMResult",
    "FAITHFUL_COLUMNS",
    "FitResult",
    "GMMParams",
    "GradientResult",
    "INIT_METHODS",
    "IncompleteData",
    "ManySelection",
    "MethodTrace",
    "OnlineResult",
    "OnlineState",
    "PENGUINS_COLUMNS",
    "Selection",
    "SelectionCell",
    "StreamProgress",
    "SuffStats",
    "UnconstrainedParams",
    "VBFitResult",
    "VBPosterior",
    "VBResult",
    "aic",
    "bayesian_mixture_prior",
    "bic",
    "compare",
    "default_batch_size",
    "default_prior",
    "e_step",
    "effective_n_components",
    "elbo",
    "em_loop",
    "enable_compilation_cache",
    "fit",
    "fit_gradient",
    "fit_many",
    "fit_online",
    "fit_stream",
    "fit_vb",
    "fit_vb_many",
    "from_unconstrained",
    "icl",
    "impute",
    "initial_responsibilities",
    "initialize",
    "kmeans",
    "kmeans_plusplus",
    "load",
    "load_faithful",
    "load_penguins",
    "log_likelihood",
    "log_prior",
    "log_prob",
    "m_step",
    "n_parameters",
    "online_init",
    "online_update",
    "pad_datasets",
    "predict",
    "predict_proba",
    "q_function",
    "sample",
    "sample_missing",
    "save",
    "score",
    "score_samples",
    "select",
    "select_many",
    "stats_from_responsibilities",
    "stream_e_step",
    "to_unconstrained",
    "vb_e_step",
    "vb_initialize",
    "vb_loop",
    "vb_m_step",
    "weighted_log_prob",
]
