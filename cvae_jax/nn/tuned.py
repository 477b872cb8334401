"""Conv and ConvTranspose with flax's parameters and values, and gradients written for XLA:CPU.

The `tuned` backend of `cvae_jax.nn.layers` (`model.kernels=tuned`, or `auto` on CPU). Each layer
has the parameter names, shapes and initializers of its flax namesake
(nn.Conv(features, (k, k), strides=s, padding="SAME"), nn.ConvTranspose(..., padding="SAME")), so
checkpoints are interchangeable, and the same values up to float rounding (tests check values and
gradients against flax). Where XLA:CPU's default lowering was measured slow, the gradient (and in
two cases the forward) is computed another way; the `(model.kernels=...)` cells of
benchmarks/RESULTS.md measure per model whether this still pays on the current jax:

- conv kernel gradient: one matmul over the input's extracted patches (XLA:CPU lowers it to a
  convolution with the batch as its feature dimension, and runs its own conv gradients slowly inside
  a lax.scan); the input gradient is one matmul to every tap's input-side map, summed per stride
  phase (`_phase_sum`);
- conv with few output channels (k*k*c_out <= c_in, stride 1, e.g. a last layer to 1-channel
  images): one matmul to every tap's output and shifted sums (`conv_output_taps`), whose gradients
  are plain matmuls;
- transposed conv: the forward as one matmul to every tap's output (`_conv_transpose_taps`; XLA:CPU
  convolves the zero-dilated input, 4x the work at stride 2), both gradients as one matmul against
  the concatenated strided rows of the output gradient (XLA's kernel gradient is an rhs-dilated
  convolution run by a slow generic loop).

Dense layers are stock flax in both backends: the dense kernels this module had (a blocked forward
for long inputs at small batch, a transposed kernel gradient for wide inputs) no longer paid on the
current jax (benchmarks/RESULTS.md), and were deleted.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

_NHWC = ("NHWC", "HWIO", "NHWC")


def lecun_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """flax's nn.initializers.lecun_normal() (a truncated normal, variance 1 / fan_in, fan_in = the
    product of all but the last axis), with the draw flat and reshaped: the same values, but
    XLA:CPU compiles a 4-D draw more slowly."""
    variance = jnp.array(1.0 / math.prod(shape[:-1]), dtype)
    stddev = jnp.sqrt(variance) / jnp.array(0.87962566103423978, dtype)  # the std of N(0, 1) cut at +-2
    return (jax.random.truncated_normal(key, -2, 2, (math.prod(shape),), dtype) * stddev).reshape(shape)


def _cast_params(layer: nn.Module, x: jax.Array, kernel_shape: tuple[int, ...]):
    """(x, kernel, bias) in `layer.dtype`, with flax's parameter names and initializers (lecun-normal
    kernel, zero bias); called inside the layer's compact __call__."""
    kernel = layer.param("kernel", lecun_normal, kernel_shape)
    bias = layer.param("bias", nn.initializers.zeros_init(), (layer.features,))
    return x.astype(layer.dtype), kernel.astype(layer.dtype), bias.astype(layer.dtype)


@jax.custom_vjp
def wide_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x @ kernel for a tall x [B, in] against a small kernel [in, out] (the tap matmul of
    `conv_output_taps`); the kernel gradient is computed as (g^T x)^T, which XLA:CPU runs faster
    than x^T g at these shapes."""
    return x @ kernel


def _wide_matmul_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _wide_matmul_bwd(residuals, grad):
    x, kernel = residuals
    # The barrier keeps XLA from folding the transpose back into the slow x^T g form.
    return grad @ kernel.T, jax.lax.optimization_barrier(grad.T @ x).T


wide_matmul.defvjp(_wide_matmul_fwd, _wide_matmul_bwd)


def _conv(x, kernel, stride: int):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """lax.conv_general_dilated (NHWC, HWIO, "SAME", equal strides), with the kernel gradient computed
    as one matmul over the input's patches and the input gradient as one matmul to every tap's
    input-side map, summed over each stride phase of the input."""
    return _conv(x, kernel, stride)


def _conv_fwd(x, kernel, stride):
    return _conv(x, kernel, stride), (x, kernel)


def _tap_rows(padded: jax.Array, starts, size: tuple[int, int], stride: int) -> jax.Array:
    """Rows [N, len(starts)*C] of a padded [B, H, W, C] array: for each (row, col) start, the
    size[0] x size[1] grid of pixels from there in steps of `stride`, taps concatenated tap-major."""
    batch, _, _, channels = padded.shape
    taps = [
        jax.lax.slice(
            padded,
            (0, r, c, 0),
            (batch, r + stride * (size[0] - 1) + 1, c + stride * (size[1] - 1) + 1, channels),
            (1, stride, stride, 1),
        )
        for r, c in starts
    ]
    return jnp.concatenate(taps, axis=-1).reshape(-1, len(starts) * channels)


def _conv_bwd(stride, residuals, grad):
    # y[b, i, j] = sum_{p, q} xpad[b, s*i + p, s*j + q] kernel[p, q], so
    # dk[p, q] = sum_{b, i, j} xpad[b, s*i + p, s*j + q]^T grad[b, i, j]: the kh*kw strided slices of
    # the padded input as patches [N, kh*kw*c_in], contracted with grad [N, c_out].
    x, kernel = residuals
    kh, kw, c_in, c_out = kernel.shape
    pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (stride, stride), "SAME")
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    patches = _tap_rows(padded, [(p, q) for p in range(kh) for q in range(kw)], grad.shape[1:3], stride)
    d_kernel = (grad.reshape(-1, c_out).T @ patches).T.reshape(kernel.shape).astype(kernel.dtype)
    # x[i] gets g[o] k[a]^T where i = s*o + a - low = s*(o + q) + r, (q, r) = divmod(a - low, s): input
    # phase r, offset q. XLA:CPU's own input gradient (a transposed convolution) is slow in a scan.
    taps = (grad.reshape(-1, c_out) @ kernel.reshape(-1, c_out).T).reshape(*grad.shape[:3], kh, kw, c_in)
    (low_h, _), (low_w, _) = pads
    d_x = _phase_sum(
        taps,
        [divmod(a - low_h, stride)[::-1] for a in range(kh)],
        [divmod(b - low_w, stride)[::-1] for b in range(kw)],
        stride,
    )
    return d_x[:, : x.shape[1], : x.shape[2]].astype(x.dtype), d_kernel


conv.defvjp(_conv_fwd, _conv_bwd)


def _taps_matrix(kernel: jax.Array) -> jax.Array:
    """An HWIO kernel as one [c_in, kh*kw*c_out] matrix, tap-major: x @ it gives every tap's output."""
    kh, kw, c_in, c_out = kernel.shape
    return kernel.transpose(2, 0, 1, 3).reshape(c_in, kh * kw * c_out)


def _shift(t: jax.Array, offset: int, axis: int, size: int) -> jax.Array:
    """y[m] = t[m - offset] along `axis` for m in [0, size), zero where m - offset is out of range."""
    low, high = max(offset, 0), max(size - t.shape[axis] - offset, 0)
    padded = jnp.pad(t, [(low, high) if d == axis else (0, 0) for d in range(t.ndim)])
    return jax.lax.slice_in_dim(padded, low - offset, low - offset + size, axis=axis)


def conv_output_taps(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A stride-1 "SAME" convolution as one matmul to every tap's output, t = x @ [c_in, kh*kw*c_out],
    then the sum of the kh*kw tap maps, each shifted into place. For few output channels
    (kh*kw*c_out <= c_in) t is no larger than x, and autodiff of this form runs its gradients as
    plain matmuls (faster than XLA:CPU's convolution gradients for such shapes), the
    kernel's as in `wide_matmul`."""
    kh, kw, _, c_out = kernel.shape
    batch, height, width, c_in = x.shape
    taps = wide_matmul(x.reshape(-1, c_in), _taps_matrix(kernel)).reshape(batch, height, width, kh, kw, c_out)
    (low_h, _), (low_w, _) = jax.lax.padtype_to_pads((height, width), (kh, kw), (1, 1), "SAME")
    # y[i, j] = sum_{a, b} xpad[i + a, j + b] k[a, b] = sum_{a, b} t[i + a - low_h, j + b - low_w, a, b].
    return sum(
        _shift(_shift(taps[:, :, :, a, b], low_h - a, 1, height), low_w - b, 2, width)
        for a in range(kh)
        for b in range(kw)
    )


class Conv(nn.Module):
    """A 2-D convolution with the parameters and values of flax's
    nn.Conv(features, (k, k), strides=(s, s), padding="SAME"): `conv_output_taps` where its outputs are
    few (stride 1, k*k*features <= c_in), else the patch-matmul kernel gradient where its patches are
    small (k*k*c_in <= features, e.g. a first layer on 1-channel images) and on CPU (where XLA's own
    conv gradients are slow inside lax.scan); XLA's convolution otherwise."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel, bias = _cast_params(self, x, (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
        # The tap maps are no larger than the input only when k*k*c_out <= c_in (and the patches then
        # larger than the output gradient): there `conv_output_taps`, elsewhere the patch-matmul `conv`.
        taps = self.kernel_size**2
        small_patches = taps * x.shape[-1] <= self.features
        if not small_patches and self.stride == 1 and taps * self.features <= x.shape[-1]:
            y = conv_output_taps(x, kernel)
        else:
            y = conv(x, kernel, self.stride)
        return y + bias


def _transpose_padding(kernel: int, stride: int) -> tuple[int, int]:
    """The (low, high) padding of the stride-dilated input that lax.conv_transpose uses for "SAME"."""
    total = kernel + stride - 2
    low = kernel - 1 if stride > kernel - 1 else -(-total // 2)
    return low, total - low


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_transpose(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """lax.conv_transpose (NHWC, HWIO, "SAME"), with input and kernel gradients computed as one
    matmul each over the output gradient's rows that every kernel tap reads, and the forward as one
    matmul too (`_conv_transpose_taps`)."""
    return _conv_transpose_fwd(x, kernel, stride)[0]


def _conv_transpose_taps(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """lax.conv_transpose "SAME" as one matmul to every tap's output, t = x @ [c_in, kh*kw*c_out], then
    for each of the stride x stride output phases the sum of its taps' maps, shifted into place, and
    the phases interleaved. XLA:CPU runs the transposed convolution over the zero-dilated input
    (4x the multiply-adds at stride 2)."""
    kh, kw, c_in, c_out = kernel.shape
    taps = (x.reshape(-1, c_in) @ _taps_matrix(kernel)).reshape(*x.shape[:3], kh, kw, c_out)
    # Tap a adds x[i] k[a] at output row p = low + s*i - a = s*(i + d) + r: phase r, offset d.
    (low_h, _), (low_w, _) = _transpose_padding(kh, stride), _transpose_padding(kw, stride)
    return _phase_sum(
        taps,
        [divmod(low_h - a, stride)[::-1] for a in range(kh)],
        [divmod(low_w - b, stride)[::-1] for b in range(kw)],
        stride,
    )


def _phase_sum(taps: jax.Array, rows, cols, stride: int) -> jax.Array:
    """taps [B, H, W, kh, kw, C] -> y [B, s*H, s*W, C], y[s*m + r, s*n + c] = the sum over the taps (a, b)
    with rows[a] = (r, d) and cols[b] = (c, e) of taps[m - d, n - e, a, b] (zero outside [0, H) x [0, W)):
    each of the s*s output phases sums its taps' maps, shifted into place; the phases are interleaved."""
    batch, height, width, kh, kw, channels = taps.shape
    phases = [
        [
            sum(
                (
                    _shift(_shift(taps[:, :, :, a, b], rows[a][1], 1, height), cols[b][1], 2, width)
                    for a in range(kh)
                    if rows[a][0] == r
                    for b in range(kw)
                    if cols[b][0] == c
                ),
                jnp.zeros((batch, height, width, channels), taps.dtype),
            )
            for c in range(stride)
        ]
        for r in range(stride)
    ]
    y = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # [B, H, s, W, s, C]
    return y.reshape(batch, height * stride, width * stride, channels)


def _conv_transpose_fwd(x, kernel, stride):
    return _conv_transpose_taps(x, kernel, stride), (x, kernel)


def _conv_transpose_bwd(stride, residuals, grad):
    # y[p] = sum_a xd[p + a] k[a], xd = x dilated by `stride` and padded by `low`: xd[low + s*i] = x[i]. So
    # with rows_a[i] = grad[low - a + s*i] (out-of-range rows read zero padding), dx[i] = sum_a rows_a[i] k[a]^T
    # and dk[a] = sum_i x[i]^T rows_a[i]: concatenate the taps' rows and both are one matmul.
    x, kernel = residuals
    kh, kw, c_in, c_out = kernel.shape
    (low_h, _), (low_w, _) = _transpose_padding(kh, stride), _transpose_padding(kw, stride)
    pad = max(kh, kw)
    padded = jnp.pad(grad, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    starts = [(low_h - a + pad, low_w - b + pad) for a in range(kh) for b in range(kw)]
    rows = _tap_rows(padded, starts, x.shape[1:3], stride)
    d_x = (rows @ _taps_matrix(kernel).T).reshape(x.shape)
    d_kernel = (x.reshape(-1, c_in).T @ rows).reshape(c_in, kh, kw, c_out).transpose(1, 2, 0, 3)
    return d_x, d_kernel.astype(kernel.dtype)


conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


class ConvTranspose(nn.Module):
    """A 2-D transposed convolution with the parameters (names, shapes, init) of flax's
    nn.ConvTranspose(features, (k, k), strides=(s, s), padding="SAME"), and fast gradients."""

    features: int
    kernel_size: int = 3
    stride: int = 2
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x, kernel, bias = _cast_params(self, x, (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
        return conv_transpose(x, kernel, self.stride) + bias
