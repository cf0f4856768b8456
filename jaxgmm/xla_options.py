"""``jit`` for jaxgmm's compiled entry points: ``jax.jit`` with XLA:CPU options that help EM.

jaxlib 0.10's XLA:CPU hands matrix products to YNNPACK fusions. On this
project's benchmark machine (2 AVX2 cores) they were slower than XLA's own
kernels for every product EM makes: 1.5× per iteration on *mid* (100,000 ×
16, K = 16, full) and 1.4× for diag, and for the tiny products of small data
sets (300 × 2, K = 3) a call took 10 µs instead of 0.5, which made
``fit_many`` 1.3× slower. :func:`jit` compiles with those fusions off.

A jaxlib that does not know an option refuses the compile, so the options
are tried once per process on a trivial function and dropped if refused.
They only concern CPU compiles; other backends ignore them. To get the same
compiles for your own ``jax.jit`` around :func:`jaxgmm.e_step` and friends,
pass ``compiler_options=jaxgmm.xla_options.compiler_options()``.
"""

import functools

import jax
import numpy as np

_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def compiler_options() -> dict[str, str]:
    """The XLA options jaxgmm compiles with: ``{}`` where this jaxlib does not know them."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS).lower(np.float32(0)).compile()
    except Exception:  # a jaxlib without the option: "No such compile option"
        return {}
    return dict(_CPU_OPTIONS)


class _Jitted:
    """``jax.jit(fn, **jit_kwargs)``, with :func:`compiler_options` where it is compiled on its own.

    JAX takes compiler options only for a top-level compile; called inside
    another trace, the function is inlined there and compiles with that
    trace's options. Both are built at their first use, so that importing
    jaxgmm neither starts JAX's backends nor compiles anything.
    """

    def __init__(self, fn, jit_kwargs):
        self._fn, self._jit_kwargs, self._top_level, self._nested = fn, jit_kwargs, None, None
        functools.update_wrapper(self, fn)

    def _get(self):
        if self._top_level is None:
            self._top_level = jax.jit(self._fn, compiler_options=compiler_options(), **self._jit_kwargs)
        return self._top_level

    def _get_nested(self):
        if self._nested is None:
            self._nested = jax.jit(self._fn, **self._jit_kwargs)
        return self._nested

    def __call__(self, *args, **kwargs):
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs))):
            return self._get_nested()(*args, **kwargs)
        try:
            return self._get()(*args, **kwargs)
        except ValueError as exc:  # inside a trace but with no traced argument
            if "top-level" not in str(exc):
                raise
            return self._get_nested()(*args, **kwargs)

    def __getattr__(self, name):  # lower, trace, eval_shape, _cache_size, ...
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)


def jit(fn=None, **jit_kwargs):
    """Drop-in for ``jax.jit`` (also as ``partial(jit, static_argnames=...)``) with :func:`compiler_options`."""
    if fn is None:
        return functools.partial(jit, **jit_kwargs)
    return _Jitted(fn, jit_kwargs)
