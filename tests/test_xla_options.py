"""jaxgmm's ``jit``: compiler options on top-level compiles, plain inlining inside other traces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgmm
from conftest import DTYPE, make_blobs, rtol_for
from jaxgmm import xla_options


def _data_and_start():
    X = jnp.asarray(make_blobs(seed=3, n=200)[0], DTYPE)
    return X, jaxgmm.initialize(jax.random.key(0), X, 3)


def test_em_loop_compiles_with_the_options_where_jaxlib_takes_them():
    options = xla_options.compiler_options()
    if not options:
        pytest.skip("this jaxlib refuses the options; jaxgmm compiles without them")
    X, start = _data_and_start()
    plain = jax.jit(jaxgmm.em_loop.__wrapped__, static_argnames=("max_iter", "block_size", "fast"))
    if "ynn" not in plain.lower(start, X).compile().as_text():
        pytest.skip("this jaxlib fuses no matrix product into YNNPACK here: nothing to turn off")
    assert "ynn" not in jaxgmm.em_loop.lower(start, X).compile().as_text()


@pytest.mark.parametrize("refused", ["_CPU_OPTIONS", "_SMALL_INPUT_OPTIONS"])
def test_refused_options_are_dropped(monkeypatch, refused):
    known = xla_options.compiler_options()
    monkeypatch.setattr(xla_options, refused, {"xla_cpu_no_such_option_jaxgmm_test": "1"})
    xla_options.compiler_options.cache_clear()
    try:
        if refused == "_CPU_OPTIONS":
            assert xla_options.compiler_options() == xla_options.compiler_options(True) == {}
        else:  # the small-input option alone is dropped
            assert xla_options.compiler_options(True) == xla_options.compiler_options() == known
    finally:
        xla_options.compiler_options.cache_clear()


def test_small_inputs_compile_for_latency_and_larger_ones_for_speed(monkeypatch):
    """Top-level calls take the small-input options exactly when no argument exceeds the limit."""
    asked = []
    real = xla_options.compiler_options
    monkeypatch.setattr(xla_options, "compiler_options", lambda small=False: asked.append(small) or real(small))
    fit = xla_options.jit(jaxgmm.em_loop.__wrapped__, static_argnames=("max_iter",))  # variants built anew
    X, start = _data_and_start()
    limit = xla_options.SMALL_INPUT_ELEMENTS
    at_limit = jnp.resize(X, (limit // 2, 2))  # exactly the limit's elements
    over = jnp.resize(X, (limit // 2 + 1, 2))
    fit(start, X, max_iter=2)
    fit(start, at_limit, max_iter=2)
    assert asked == [True]  # one variant, one compile per shape
    assert fit._cache_size() == 2
    fit(start, over, max_iter=2)
    assert asked == [True, False] and fit._cache_size() == 3
    jax.jit(lambda x: fit(start, x, max_iter=2))(over)  # nested: inlined, no top-level variant asked for
    assert asked == [True, False]


@pytest.mark.users_compile
def test_small_input_compile_agrees_with_the_default_compile(monkeypatch):
    """Both variants of one program give the same fit (in the suite's users_compile process, where
    the default variant keeps XLA:CPU's fusion emitters)."""
    X, start = _data_and_start()
    latency = xla_options.jit(jaxgmm.em_loop.__wrapped__, static_argnames=("max_iter",))
    speed = xla_options.jit(jaxgmm.em_loop.__wrapped__, static_argnames=("max_iter",))
    small = latency(start, X, max_iter=20)
    monkeypatch.setattr(xla_options, "SMALL_INPUT_ELEMENTS", 0)  # every input is large
    large = speed(start, X, max_iter=20)
    assert set(latency._top_level) == {True} and set(speed._top_level) == {False}
    rtol = rtol_for(float64=1e-12, float32=1e-5)
    for got, want in zip(jax.tree.leaves(small), jax.tree.leaves(large)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


def test_nested_calls_inline_and_agree_with_top_level_calls():
    X, start = _data_and_start()
    top = jaxgmm.em_loop(start, X, max_iter=5, tol=0.0)
    traced = jax.jit(lambda x: jaxgmm.em_loop(start, x, max_iter=5, tol=0.0))(X)  # data traced
    closed = jax.jit(lambda: jaxgmm.em_loop(start, X, max_iter=5, tol=0.0))()  # nothing traced
    batched = jax.vmap(lambda x: jaxgmm.em_loop(start, x, max_iter=5, tol=0.0))(jnp.stack([X, X]))
    rtol = rtol_for(float64=1e-12, float32=1e-5)
    for other in (traced, closed, jax.tree.map(lambda a: a[1], batched)):
        for got, want in zip(jax.tree.leaves(other), jax.tree.leaves(top)):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


def test_wrapper_looks_like_the_function_and_the_jitted_one():
    assert jaxgmm.em_loop.__name__ == "em_loop"
    assert "Run EM" in jaxgmm.em_loop.__doc__
    assert callable(jaxgmm.em_loop.lower) and isinstance(jaxgmm.em_loop._cache_size(), int)
    with pytest.raises(AttributeError):
        jaxgmm.em_loop.no_such_attribute
