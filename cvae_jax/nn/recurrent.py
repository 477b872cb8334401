"""A GRU whose input projection runs outside the time loop.

The cell is flax.linen.GRUCell's (the variant whose reset gate multiplies the projected state):
    r = sigmoid(x W_ir + b_ir + h W_hr)      u = sigmoid(x W_iu + b_iu + h W_hu)
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn))      h' = (1 - u) * n + u * h
`gates_x` = x W_i + b_i for every time step is computed by the caller in one product over the whole
sequence (or, for token inputs, gathered from a [vocab, 3H] table); the lax.scan keeps only the
[B, H] x [H, 3H] recurrent product. Gate order in the 3H axis: r, u, n.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def update(gates_x: jax.Array, h: jax.Array, w_h: jax.Array, b_hn: jax.Array) -> jax.Array:
    """One step: gates_x [B, 3H], state h [B, H] -> new state [B, H]."""
    hidden = h.shape[-1]
    gates_h = h @ w_h
    r = jax.nn.sigmoid(gates_x[:, :hidden] + gates_h[:, :hidden])
    u = jax.nn.sigmoid(gates_x[:, hidden : 2 * hidden] + gates_h[:, hidden : 2 * hidden])
    n = jnp.tanh(gates_x[:, 2 * hidden :] + r * (gates_h[:, 2 * hidden :] + b_hn))
    return (1.0 - u) * n + u * h


def run(
    gates_x: jax.Array, h0: jax.Array, w_h: jax.Array, b_hn: jax.Array, lengths: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """The recurrence over gates_x [B, L, 3H] from h0 [B, H]: (states [B, L, H], final state [B, H]).

    With `lengths` [B], row b's state stops changing after its first lengths[b] steps, so the final
    state is the one after its last real input (padding after it is ignored)."""
    steps = jnp.arange(gates_x.shape[1])

    def body(h, inputs):
        g, t = inputs
        new = update(g, h, w_h, b_hn)
        if lengths is not None:
            new = jnp.where((t < lengths)[:, None], new, h)
        return new, new

    last, states = jax.lax.scan(body, h0, (jnp.swapaxes(gates_x, 0, 1), steps))
    return jnp.swapaxes(states, 0, 1), last


def recurrent_init(key, shape, dtype=jnp.float32):
    """[H, 3H]: one orthogonal [H, H] block per gate, as flax's GRUCell initializes them."""
    hidden = shape[0]
    keys = jax.random.split(key, 3)
    return jnp.concatenate([nn.initializers.orthogonal()(k, (hidden, hidden), dtype) for k in keys], axis=1)


class Recurrent(nn.Module):
    """The recurrent weights of a GRU of `features` units: (W_h [H, 3H], b_hn [H])."""

    features: int

    @nn.compact
    def __call__(self):
        w_h = self.param("kernel", recurrent_init, (self.features, 3 * self.features))
        b_hn = self.param("bias", nn.initializers.zeros, (self.features,))
        return w_h, b_hn
