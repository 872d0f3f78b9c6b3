"""Would hand-written micro-kernels beat BLAS for the small products of small networks? (issue #12)

Times a register-blocked product kernel against OpenBLAS (np.dot in @njit, which fastmlp's
kernels call) at the shapes of a W2 batch and a few around them, on this machine, one BLAS
thread. Prints a table; nothing in fastmlp uses this kernel (see bench/RESULTS.md, "Small
products"). Run: python bench/microkernel.py [--dtype float32|float64] [--repeats N]

The kernel: numba has no SIMD vector type and leaves LLVM's SLP vectoriser off, so a tile
written as scalar loops is unrolled and stays scalar (about 9 GFLOP/s here). This one writes the
tile in LLVM IR through a numba intrinsic: MR rows x 2 vectors of accumulators kept in
registers across the k loop, one fused multiply-add per vector per row per k, masked loads and
stores for a partial last column block. The vector width is the host's widest (512 bits with
AVX-512, else 256).
"""

import argparse
import time

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array
from threadpoolctl import threadpool_limits

MR = 4        # rows of a tile
VECTORS = 2   # vectors of columns in a tile
VECTOR_BYTES = 64 if llvm.get_host_cpu_features().get("avx512f") else 32


def _vector_intrinsics(module, vty, lanes, bits):
    name = f"v{lanes}f{bits}"
    mask = ir.VectorType(ir.IntType(1), lanes)
    i32 = ir.IntType(32)
    load = cgutils.get_or_insert_function(
        module, ir.FunctionType(vty, [vty.as_pointer(), i32, mask, vty]),
        f"llvm.masked.load.{name}.p0")
    store = cgutils.get_or_insert_function(
        module, ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), i32, mask]),
        f"llvm.masked.store.{name}.p0")
    fma = cgutils.get_or_insert_function(module, ir.FunctionType(vty, [vty, vty, vty]),
                                         f"llvm.fma.{name}")
    return load, store, fma


@intrinsic
def product_tile(typingctx, C, A, B, i0, j0, rows, cols):
    """C[i0:i0+rows, j0:j0+cols] = A[i0:i0+rows, :] @ B[:, j0:j0+cols].

    rows: a literal <= MR; cols <= VECTORS * lanes, at run time. B's rows must be contiguous
    (C or a C-order view); A may be any 2-D view (A.T of a C array for the weight gradient).
    """
    if not isinstance(rows, types.IntegerLiteral):
        return None
    n_rows = rows.literal_value
    sig = types.none(C, A, B, i0, j0, rows, cols)

    def codegen(context, builder, sig, args):
        c_, a_, b_ = (make_array(t)(context, builder, v) for t, v in zip(sig.args[:3], args[:3]))
        intp = context.get_value_type(types.intp)
        i0_, j0_, _, cols_ = (context.cast(builder, v, t, types.intp)
                              for v, t in zip(args[3:], sig.args[3:]))
        fty = context.get_data_type(sig.args[0].dtype)
        size = context.get_abi_sizeof(fty)
        lanes = VECTOR_BYTES // size
        vty = ir.VectorType(fty, lanes)
        load, store, fma = _vector_intrinsics(builder.module, vty, lanes, 8 * size)
        i32, byte = ir.IntType(32), ir.IntType(8).as_pointer()
        align = ir.Constant(i32, size)
        zero = ir.Constant(vty, None)
        sa, sb, sc = (cgutils.unpack_tuple(builder, x.strides, 2) for x in (a_, b_, c_))
        depth = builder.extract_value(a_.shape, 1)

        def address(base, offset, ty):  # base + offset bytes, as a ty*
            return builder.bitcast(builder.gep(builder.bitcast(base, byte), [offset],
                                               inbounds=True), ty.as_pointer())

        def splat(value, ty, n):
            one = builder.insert_element(ir.Constant(ir.VectorType(ty, n), ir.Undefined), value,
                                         ir.Constant(i32, 0))
            return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(i32, n), [0] * n))

        limit = splat(cols_, intp, lanes)  # lane l of vector v is live when v*lanes + l < cols
        masks = [builder.icmp_signed("<", ir.Constant(ir.VectorType(intp, lanes),
                                                      [v * lanes + lane for lane in range(lanes)]),
                                     limit) for v in range(VECTORS)]
        entry = builder.block
        test = builder.append_basic_block("tile.test")
        body = builder.append_basic_block("tile.body")
        done = builder.append_basic_block("tile.done")
        builder.branch(test)
        builder.position_at_end(test)
        k = builder.phi(intp)
        k.add_incoming(ir.Constant(intp, 0), entry)
        acc = [[builder.phi(vty) for _ in range(VECTORS)] for _ in range(n_rows)]
        for row in acc:
            for phi in row:
                phi.add_incoming(zero, entry)
        builder.cbranch(builder.icmp_signed("<", k, depth), body, done)

        builder.position_at_end(body)
        b_row = builder.add(builder.mul(k, sb[0]), builder.mul(j0_, sb[1]))
        b_vectors = [builder.call(load, [address(b_.data, builder.add(
            b_row, ir.Constant(intp, v * lanes * size)), vty), align, masks[v], zero])
            for v in range(VECTORS)]
        for r in range(n_rows):
            a_at = builder.add(builder.mul(builder.add(i0_, ir.Constant(intp, r)), sa[0]),
                               builder.mul(k, sa[1]))
            a = splat(builder.load(address(a_.data, a_at, fty)), fty, lanes)
            for v in range(VECTORS):
                acc[r][v].add_incoming(builder.call(fma, [a, b_vectors[v], acc[r][v]]), body)
        k.add_incoming(builder.add(k, ir.Constant(intp, 1)), body)
        builder.branch(test)

        builder.position_at_end(done)
        for r in range(n_rows):
            c_row = builder.add(builder.mul(builder.add(i0_, ir.Constant(intp, r)), sc[0]),
                                builder.mul(j0_, sc[1]))
            for v in range(VECTORS):
                builder.call(store, [acc[r][v], address(c_.data, builder.add(
                    c_row, ir.Constant(intp, v * lanes * size)), vty), align, masks[v]])
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True)
def tiled_product(C, A, B):
    """C = A @ B by product_tile, MR rows at a time, then single rows."""
    M, N = C.shape
    width = VECTORS * (VECTOR_BYTES // C.itemsize)
    for j0 in range(0, N, width):
        cols = min(width, N - j0)
        i0 = 0
        while i0 + MR <= M:
            product_tile(C, A, B, i0, j0, MR, cols)
            i0 += MR
        while i0 < M:
            product_tile(C, A, B, i0, j0, 1, cols)
            i0 += 1


@njit(nogil=True)
def blas_product(C, A, B):
    np.dot(A, B, C)


@njit(nogil=True)
def repeat(product, C, A, B, times):
    for _ in range(times):
        product(C, A, B)


def seconds_per_call(product, C, A, B, times, repeats):
    """A is passed as it is used (A.T is an F-order view: BLAS gets a transpose flag)."""
    repeat(product, C, A, B, 2)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        repeat(product, C, A, B, times)
        best = min(best, time.perf_counter() - start)
    return best / times


# (label, M, K, N, A transposed): the W2 network 20-64-32-3 at batch 32; "TN" is the weight
# gradient A.T @ dZ. The input gradient dZ @ W.T reads B by columns, which this kernel cannot.
SHAPES = [("forward 1", 32, 20, 64, False), ("forward 2", 32, 64, 32, False),
          ("forward 3", 32, 32, 3, False), ("dW 1", 20, 32, 64, True),
          ("dW 2", 64, 32, 32, True), ("dW 3", 32, 32, 3, True),
          ("batch 64", 64, 64, 64, False), ("batch 128", 128, 64, 64, False),
          ("odd", 33, 20, 70, False)]


def check(dtype):
    """Raise AssertionError unless tiled_product equals A @ B (float64, to the dtype's rounding)
    at every size around the tile: rows below, at and above MR, columns below, at and above
    one vector and the tile width, plain and transposed A."""
    dtype = np.dtype(dtype)
    width = VECTORS * VECTOR_BYTES // dtype.itemsize
    rng = np.random.default_rng(1)
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    for m in (1, MR - 1, MR, MR + 1, 2 * MR + 3):
        for n in (1, width // 2 - 1, width // 2, width - 1, width, width + 1, 2 * width + 5):
            for k in (1, 7, 20):
                for transpose_a in (False, True):
                    A = rng.standard_normal((k, m)).astype(dtype).T if transpose_a else \
                        rng.standard_normal((m, k)).astype(dtype)
                    B = rng.standard_normal((k, n)).astype(dtype)
                    C = np.full((m, n), np.nan, dtype)
                    tiled_product(C, A, B)
                    expected = A.astype(np.float64) @ B.astype(np.float64)
                    scale = np.abs(A).astype(np.float64) @ np.abs(B).astype(np.float64)
                    error = np.abs(C - expected) / scale
                    assert error.max() <= tolerance * k, (m, n, k, transpose_a, error.max())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    print(f"{args.dtype}, {VECTOR_BYTES * 8}-bit vectors, tile {MR} x "
          f"{VECTORS * VECTOR_BYTES // dtype.itemsize}, one BLAS thread; best of {args.repeats}")
    print(f"{'product':12s} {'M x K x N':>12s} {'tile us':>8s} {'BLAS us':>8s} "
          f"{'tile/BLAS':>9s} {'tile GFLOP/s':>12s}")
    with threadpool_limits(1, user_api="blas"):
        for label, m, k, n, transpose_a in SHAPES:
            A = rng.standard_normal((k, m)).astype(dtype).T if transpose_a else \
                rng.standard_normal((m, k)).astype(dtype)
            B = rng.standard_normal((k, n)).astype(dtype)
            expected = A.astype(np.float64) @ B
            C = np.zeros((m, n), dtype)
            tiled_product(C, A, B)
            tolerance = 1e-4 if dtype == np.float32 else 1e-12
            if not np.allclose(C, expected, rtol=tolerance, atol=tolerance * k):
                raise SystemExit(f"{label}: the tiled product is wrong (see check())")
            tile = seconds_per_call(tiled_product, C, A, B, args.calls, args.repeats)
            blas = seconds_per_call(blas_product, C, A, B, args.calls, args.repeats)
            print(f"{label:12s} {f'{m}x{k}x{n}':>12s} {tile * 1e6:8.3f} {blas * 1e6:8.3f} "
                  f"{tile / blas:9.2f} {2 * m * k * n / tile / 1e9:12.0f}")


if __name__ == "__main__":
    main()
