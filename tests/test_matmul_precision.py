"""Every matrix product jaxgmm traces asks for full float32 precision.

On CPU float32 products are exact-float32 anyway, so accuracy tests cannot
see the difference; on GPUs and TPUs JAX's default would silently use
TensorFloat-32 or bfloat16. These tests read the traced programs instead:
every ``dot_general`` must carry ``Precision.HIGHEST``.
"""

import jax
import jax.numpy as jnp
import pytest
from jax.extend.core import ClosedJaxpr, Jaxpr

import jaxgmm
from jaxgmm.online import online_init, online_update
from conftest import DTYPE, make_blobs

HIGHEST = jax.lax.Precision.HIGHEST


def dot_precisions(jaxpr):
    """The ``precision`` parameter of every ``dot_general`` in ``jaxpr`` and its sub-programs."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, ClosedJaxpr):
                    found += dot_precisions(sub.jaxpr)
                elif isinstance(sub, Jaxpr):
                    found += dot_precisions(sub)
    return found


def assert_all_highest(fn, *args, has_products=True):
    precisions = dot_precisions(jax.make_jaxpr(fn)(*args).jaxpr)
    assert bool(precisions) == has_products
    assert all(p == (HIGHEST, HIGHEST) for p in precisions), precisions


@pytest.fixture(scope="module")
def data():
    X, *_ = make_blobs(seed=3, n=200, k=3, d=3)
    return jnp.asarray(X, DTYPE)


def test_dot_precisions_sees_default_products():
    # The walker must be able to fail: a plain product has no precision set.
    precisions = dot_precisions(jax.make_jaxpr(lambda a: a @ a)(jnp.eye(3, dtype=DTYPE)).jaxpr)
    assert precisions and all(p != (HIGHEST, HIGHEST) for p in precisions)


@pytest.mark.parametrize("fast", [False, True])
def test_em_loop_products_are_full_precision(data, covariance_type, fast):
    start = jaxgmm.initialize(jax.random.key(0), data, 3, covariance_type=covariance_type)
    assert_all_highest(lambda p, X: jaxgmm.em_loop(p, X, max_iter=3, fast=fast), start, data)


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random"])
def test_fit_products_are_full_precision(data, init):
    assert_all_highest(lambda X: jaxgmm.fit(jax.random.key(0), X, 3, init=init, n_init=2).params, data)


def test_density_sampling_and_gradient_products_are_full_precision(data, covariance_type):
    params = jaxgmm.initialize(jax.random.key(0), data, 3, covariance_type=covariance_type)
    matrices = covariance_type in ("full", "tied")  # diag and spherical multiply elementwise only
    assert_all_highest(jaxgmm.score_samples, params, data, has_products=matrices)
    assert_all_highest(jaxgmm.log_likelihood, params, data, has_products=matrices)
    assert_all_highest(jax.grad(lambda u: jaxgmm.log_likelihood(u, data)), jaxgmm.to_unconstrained(params),
                       has_products=matrices)
    assert_all_highest(lambda p: jaxgmm.sample(jax.random.key(1), p, 10), params, has_products=matrices)
    assert_all_highest(lambda p: p.precisions, params, has_products=matrices)


def test_online_update_products_are_full_precision(data):
    params = jaxgmm.initialize(jax.random.key(0), data, 3)
    state = online_init(params)
    assert_all_highest(lambda s, X: online_update(s, X), state, data[:50])
