"""The covariance models' names (no JAX import: the command line's parser reads them)."""

COVARIANCE_MODELS = (
    "EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV",
)
"""mclust's 14 models, in mclust's order (``mclust.options("emModelNames")``)."""

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
"""scikit-learn's four covariance types (aliases of VVV, EEE, VVI, VII)."""

UNIVARIATE_MODELS = ("E", "V")
"""mclust's names for one feature (EII and VII)."""

ALL_COVARIANCE_TYPES = COVARIANCE_TYPES + COVARIANCE_MODELS + UNIVARIATE_MODELS
"""Every accepted ``covariance_type``."""
