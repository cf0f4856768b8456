"""Full float32 matrix products on every backend.

By default JAX computes float32 matrix products in reduced precision on
accelerators: TensorFloat-32 (a 10-bit mantissa) on recent NVIDIA GPUs,
bfloat16 passes on TPUs. That is a relative error near 1e-3 in every
Mahalanobis term and moment, far above the float32 accuracy the EM core
promises. Every jaxgmm function that multiplies matrices is wrapped in
:func:`float32_matmuls`, which traces it under
``jax.default_matmul_precision("highest")``. On CPU the products are full
float32 anyway, so nothing changes there; float64 is never reduced.
"""

import functools

import jax


def float32_matmuls(fn):
    """Run ``fn`` (and so trace its matrix products) at full float32 precision."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return wrapper
