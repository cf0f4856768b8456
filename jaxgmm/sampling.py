"""Drawing samples from a Gaussian mixture: ``z ~ Cat(α)``, ``x ~ N(μ_z, Σ_z)``."""

from functools import partial

import jax
import jax.numpy as jnp

from jaxgmm.matmul_precision import float32_matmuls
from jaxgmm.params import GMMParams
from jaxgmm.xla_options import jit


@partial(jit, static_argnames=("n_samples",))
@float32_matmuls
def sample(key: jax.Array, params: GMMParams, n_samples: int) -> tuple[jax.Array, jax.Array]:
    """Draw ``n_samples`` points from the mixture.

    Parameters
    ----------
    key : PRNG key
    params : GMMParams
    n_samples : int
        Static (it is a shape).

    Returns
    -------
    X : array, shape (n_samples, D)
    labels : array, shape (n_samples,), int
        The component each point was drawn from. Unlike scikit-learn's
        ``sample``, points are not sorted by component.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from jaxgmm import GMMParams, sample
    >>> p = GMMParams(jnp.array([0.3, 0.7]), jnp.array([[0.0], [5.0]]), jnp.ones(2), "spherical")
    >>> X, z = sample(jax.random.key(0), p, 1000)
    >>> X.shape, z.shape
    ((1000, 1), (1000,))
    """
    key_z, key_x = jax.random.split(key)
    dtype = params.means.dtype
    labels = jax.random.categorical(key_z, jnp.log(params.weights), shape=(n_samples,))
    noise = jax.random.normal(key_x, (n_samples, params.n_features), dtype)
    offsets = params.model.storage.cholesky_noise(params.covariances, labels, noise)
    return params.means[labels] + offsets, labels
