"""The CPU backend: Numba @njit kernels (see kernels.py)."""
