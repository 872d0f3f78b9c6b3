"""The package's shape, read from its source: no function too long to read, and no slice
assignment in compiled code (CONTRIBUTING's house rules). Parses files; imports nothing."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fastmlp"
MAX_BODY_LINES = 100
# Modules whose functions numba compiles (CPU kernels, CUDA kernels, the scalar operations).
COMPILED = ("cpu/kernels.py", "cuda/kernels.py", "cuda/fused.py", "cuda/persistent.py",
            "ops.py")


def _functions(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [node for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def body_lines(function):
    """Source lines of a function's body, its docstring left out (documentation, not code)."""
    body = function.body
    first = body[0]
    if (len(body) > 1 and isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        first = body[1]
    return function.end_lineno - first.lineno + 1


def test_no_function_body_is_longer_than_100_lines():
    offenders = sorted(
        (body_lines(function), f"{path.relative_to(PACKAGE.parent)}:{function.lineno} "
                               f"{function.name}")
        for path in sorted(PACKAGE.rglob("*.py")) for function in _functions(path)
        if body_lines(function) > MAX_BODY_LINES)
    assert not offenders, "split into named phases: " + "; ".join(
        f"{where} ({lines} lines)" for lines, where in offenders)


def test_body_lines_counts_code_without_the_docstring():
    source = 'def f():\n    """Doc\n    string."""\n    a = 1\n\n    return a\n'
    (function,) = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]
    assert body_lines(function) == 3


def _slice_assignments(path):
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for target in targets:
            for part in ast.walk(target):
                if isinstance(part, ast.Subscript) and any(
                        isinstance(index, ast.Slice) for index in ast.walk(part.slice)):
                    found.append(f"{path.name}:{node.lineno}")
    return found


def test_compiled_modules_assign_no_slices():
    """numba compiles a slice assignment's shape-mismatch error formatting into every caller
    (seconds of compile time): kernels write element by element."""
    found = [where for name in COMPILED for where in _slice_assignments(PACKAGE / name)]
    assert not found, found


def test_the_slice_assignment_finder_finds_one(tmp_path):
    path = tmp_path / "k.py"
    path.write_text("def f(a, b):\n    a[1:3] = b\n    a[0, :] += 1\n    a[0] = b[1:2]\n")
    assert _slice_assignments(path) == ["k.py:2", "k.py:3"]
