"""``jit`` for jaxgmm's compiled entry points: ``jax.jit`` with XLA:CPU options that help EM.

jaxlib 0.10's XLA:CPU hands matrix products to YNNPACK fusions. On this
project's benchmark machine (2 AVX2 cores) they were slower than XLA's own
kernels for every product EM makes: 1.5× per iteration on *mid* (100,000 ×
16, K = 16, full) and 1.4× for diag, and for the tiny products of small data
sets (300 × 2, K = 3) a call took 10 µs instead of 0.5, which made
``fit_many`` 1.3× slower. :func:`jit` compiles with those fusions off.

Small inputs compile for latency. Where no argument has more than
``SMALL_INPUT_ELEMENTS`` elements, :func:`jit` also turns off XLA:CPU's
fusion emitters: its older loop emitters compile the same program in about
half the time and run it at most 1.4× slower at these sizes, so a fit of up
to thousands of iterations finishes sooner. Measured on 2 cores, ``em_loop``
with 1,000 × 2, K = 3 (full): first call in a fresh process 1.1-1.3 → 0.7-0.8
s, 38-46 → 46-58 µs per iteration; 2,000 × 16, K = 16: first call 1.9 → 1.0
s. Larger inputs keep the fusion emitters: their code is 1.7-1.9× faster per
iteration once N·K·D² reaches about 10⁶, which pays for the compile.

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
_SMALL_INPUT_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
SMALL_INPUT_ELEMENTS = 1 << 16  # e.g. 32,768 × 2 or 4,096 × 16 data


def _accepted(options: dict) -> bool:
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(np.float32(0)).compile()
    except Exception:  # a jaxlib without the option: "No such compile option"
        return False
    return True


@functools.cache
def compiler_options(small_inputs: bool = False) -> dict:
    """The XLA options jaxgmm compiles with (``small_inputs``: those for inputs of at most
    ``SMALL_INPUT_ELEMENTS`` elements); ``{}`` where this jaxlib does not know them."""
    if small_inputs and _accepted(options := {**_CPU_OPTIONS, **_SMALL_INPUT_OPTIONS}):
        return options
    return dict(_CPU_OPTIONS) if _accepted(_CPU_OPTIONS) else {}


def _has_small_inputs(leaves) -> bool:
    return all(np.size(leaf) <= SMALL_INPUT_ELEMENTS for leaf in leaves)


class _Jitted:
    """``jax.jit(fn, **jit_kwargs)``, with :func:`compiler_options` where it is compiled on its own.

    JAX takes compiler options only for a top-level compile; called inside
    another trace, the function is inlined there and compiles with that
    trace's options. A top-level call takes the small-input options where
    every argument is small. Each variant is built at its first use, so
    that importing jaxgmm neither starts JAX's backends nor compiles anything.
    """

    def __init__(self, fn, jit_kwargs, prepare=None):
        self._fn, self._jit_kwargs, self._top_level, self._nested = fn, jit_kwargs, {}, None
        self._prepare = prepare
        functools.update_wrapper(self, fn)

    def _get(self, small_inputs=False):
        if small_inputs not in self._top_level:
            self._top_level[small_inputs] = jax.jit(
                self._fn, compiler_options=compiler_options(small_inputs), **self._jit_kwargs
            )
        return self._top_level[small_inputs]

    def _get_nested(self):
        if self._nested is None:
            self._nested = jax.jit(self._fn, **self._jit_kwargs)
        return self._nested

    def __call__(self, *args, **kwargs):
        if self._prepare is not None:
            args, kwargs = self._prepare(*args, **kwargs)
        leaves = jax.tree.leaves((args, kwargs))  # flattened once per call: this is every fit's entry
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return self._get_nested()(*args, **kwargs)
        try:
            return self._get(_has_small_inputs(leaves))(*args, **kwargs)
        except ValueError as exc:  # inside a trace but with no traced argument
            if "top-level" not in str(exc):
                raise
            return self._get_nested()(*args, **kwargs)

    def lower(self, *args, **kwargs):
        """``lower`` of the variant a call with these arguments compiles."""
        if self._prepare is not None:
            args, kwargs = self._prepare(*args, **kwargs)
        return self._get(_has_small_inputs(jax.tree.leaves((args, kwargs)))).lower(*args, **kwargs)

    def _cache_size(self) -> int:
        """Compiled programs held, over both variants."""
        return sum(jitted._cache_size() for jitted in self._top_level.values())

    def __getattr__(self, name):  # trace, eval_shape, ...
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._get(), name)


def jit(fn=None, *, prepare=None, **jit_kwargs):
    """Drop-in for ``jax.jit`` (also as ``partial(jit, static_argnames=...)``) with :func:`compiler_options`.

    ``prepare(*args, **kwargs) -> (args, kwargs)``, optional, runs on the host before each call (and
    ``lower``): where a call's arguments must be looked at before tracing, such as the layout of data
    with missing values (:func:`jaxgmm.em_loop`).
    """
    if fn is None:
        return functools.partial(jit, prepare=prepare, **jit_kwargs)
    return _Jitted(fn, jit_kwargs, prepare)
