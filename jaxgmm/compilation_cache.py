"""Opt-in persistent compilation cache, so a new process skips XLA compilation.

JAX compiles each (function, shapes, static options) once per process. With
the persistent cache on, compiled programs are written to a directory and a
later process with the same jax/jaxlib version, shapes and options loads them
instead of compiling again: the first fit of a fresh process then costs
tracing plus a file read rather than a full compile.
"""

import os
from pathlib import Path

import jax


def default_cache_dir() -> Path:
    """``$JAXGMM_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxgmm/xla``, else ``~/.cache/jaxgmm/xla``."""
    if os.environ.get("JAXGMM_CACHE_DIR"):
        return Path(os.environ["JAXGMM_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jaxgmm" / "xla"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path:
    """Turn on JAX's persistent compilation cache for this process.

    Parameters
    ----------
    directory : path, optional
        Where compiled programs are stored (default :func:`default_cache_dir`).
        Safe to share between processes; delete it to clear the cache.

    Returns
    -------
    Path
        The cache directory.

    Notes
    -----
    Sets ``jax_compilation_cache_dir`` and lowers JAX's thresholds so that
    every program is cached, including the small, fast-compiling ones that
    dominate a short interactive fit. Call it before the first fit.

    It changes process-wide JAX configuration, so it belongs at the start of
    a script or notebook, not inside library code (the test suite runs it in
    a subprocess of its own).

    Examples
    --------
    >>> import jaxgmm
    >>> jaxgmm.enable_compilation_cache()  # doctest: +SKIP
    PosixPath('/home/me/.cache/jaxgmm/xla')
    """
    path = Path(directory) if directory is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
