"""Compiled-code cache settings: fastmlp imports and trains even when no cache is writable."""

import subprocess
import sys
import textwrap


def test_import_and_fit_without_a_writable_cache_directory():
    # With neither the package directory nor the user cache writable, numba finds no cache
    # locator and raises at decoration time. Removing every locator reproduces that state (file
    # permissions cannot, since tests may run as root).
    script = textwrap.dedent("""
        import warnings
        from numba.core import caching
        impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
        impl._locator_classes = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import fastmlp
            from fastmlp import config
        assert config.CACHE is False
        assert any("no writable directory" in str(w.message) for w in caught), caught
        import numpy as np
        X = np.random.RandomState(0).normal(size=(30, 3))
        clf = fastmlp.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2).fit(X, X[:, 0] > 0)
        print("fitted", clf.n_iter_)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "fitted 2" in result.stdout


def test_cache_is_used_when_writable():
    from fastmlp import config
    from fastmlp.cpu import kernels

    assert config.CACHE is True
    assert type(kernels.epoch._cache).__name__ == "FunctionCache"
