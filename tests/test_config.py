"""Compiled-code cache settings (fastmlp/config.py): with a writable cache directory kernels are
cached there; with none, fastmlp warns once at import, compiles in memory and still trains. Both
cases run in fresh processes, so that neither depends on this machine's directories."""

import os
import subprocess
import sys
import textwrap

CACHE_WARNING = "no writable directory for numba's compiled-code cache"


def _run(script, **env):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_and_fit_without_a_writable_cache_directory():
    # With neither the package directory nor the user cache writable, numba finds no cache
    # locator and raises at decoration time. Removing every locator reproduces that state (file
    # permissions cannot, since tests may run as root).
    out = _run(f"""
        import warnings
        from numba.core import caching
        impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
        impl._locator_classes = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import fastmlp
            from fastmlp import config
            from fastmlp.cpu import kernels
            import numpy as np
            X = np.random.RandomState(0).normal(size=(30, 3))
            clf = fastmlp.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2).fit(X, X[:, 0] > 0)
        assert config.CACHE is False
        cache_warnings = [w for w in caught if {CACHE_WARNING!r} in str(w.message)]
        assert len(cache_warnings) == 1, caught  # once, at import; not per kernel or per fit
        assert cache_warnings[0].category is RuntimeWarning
        assert type(kernels.epoch._cache).__name__ == "NullCache"  # compiled in memory
        print("fitted", clf.n_iter_)
    """)
    assert "fitted 2" in out


def test_kernels_are_cached_in_a_writable_cache_directory(tmp_path):
    out = _run(f"""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from fastmlp import config
            from fastmlp.cpu import kernels
        assert config.CACHE is True
        assert not [w for w in caught if {CACHE_WARNING!r} in str(w.message)], caught
        assert type(kernels.epoch._cache).__name__ == "PackageCache"  # package-wide stamp
        print(kernels.epoch._cache.cache_path)
    """, NUMBA_CACHE_DIR=str(tmp_path))
    assert out.strip().startswith(str(tmp_path))
