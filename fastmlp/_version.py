"""fastmlp's version, in a module of its own so that any module can import it without importing
the package's public names (and so every estimator)."""

__version__ = "0.2.0.dev0"  # 0.2.0 in development (CHANGELOG)
