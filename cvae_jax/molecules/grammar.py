"""SMILES syntax as a sampler's constraint: at each step, the tokens that keep a string grammatical
and let it end within the sequence length. A draw renormalized over those tokens writes grammatical
SMILES that ends in time; valences and aromaticity it does not check, nor two ring bonds that join
the same pair of atoms (rings opened together and closed together), which RDKit's parser refuses.

Every token is of one kind (`syntax(vocab)`), and which kind may follow which is the table FOLLOWS.
A row's state completes the grammar: open branches (")" needs one), open ring closures (the end needs
none, nor an open branch), the rings opened at the current atom and at the one before it (a ring is
not closed onto either: RDKit refuses an atom bonded to itself and two bonds between one pair), and
the previous token's kind. `finish_cost` is the fewest tokens that surely end a string from a state;
a token is allowed only when the state after it can still be finished in the places left, and from
any state with cost c some allowed token leads to cost c - 1, so no row is ever left without a move.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.data.smiles import BOS, EOS, PAD, Vocab

ATOM, RING, OPEN, CLOSE, BOND, END, NEVER = range(7)  # the kinds of token
START = END  # the state before the first token (no live row has END before it)
FOLLOWS = np.array(
    #  ATOM   RING   OPEN   CLOSE  BOND   END    NEVER    <- next; previous:
    [
        [True, True, True, True, True, True, False],  # ATOM
        [True, True, True, True, True, True, False],  # RING
        [True, False, False, False, True, False, False],  # OPEN: "(" then an atom or a bond
        [True, False, True, True, True, True, False],  # CLOSE: no ring digit after ")"
        [True, True, False, False, False, False, False],  # BOND: then an atom or a ring closure
        [True, False, False, False, False, False, False],  # START: an atom first
    ]
)
BONDS = frozenset({"-", "=", "#", "$", ":", "/", "\\", "~", "."})


def syntax(vocab: Vocab) -> dict[str, np.ndarray] | None:
    """A SMILES vocabulary's token tables (None for SELFIES, which needs no constraint): "kind" int32
    [V] (PAD and BOS are NEVER, EOS is END), "depth" int32 [V] (+1 for "(", -1 for ")") and "ring"
    int32 [V], the bit of a ring-closure label (0 for the other tokens)."""
    if vocab.representation != "smiles":
        return None
    labels = sorted(t for t in vocab.tokens if t.isdigit() or t.startswith("%"))
    if len(labels) > 31:
        raise ValueError(f"{len(labels)} ring-closure labels; constrained sampling tracks at most 31")
    kind, depth, ring = [], [], []
    for i, token in enumerate(vocab.tokens):
        if i in (PAD, BOS):
            k = NEVER
        elif i == EOS:
            k = END
        elif token in labels:
            k = RING
        else:
            k = {"(": OPEN, ")": CLOSE}.get(token, BOND if token in BONDS else ATOM)
        kind.append(k)
        depth.append({OPEN: 1, CLOSE: -1}.get(k, 0))
        ring.append(1 << labels.index(token) if k == RING else 0)
    return {"kind": np.array(kind, np.int32), "depth": np.array(depth, np.int32), "ring": np.array(ring, np.int32)}


def start(rows: int) -> tuple[jax.Array, ...]:
    """The state of `rows` empty strings: (depth, rings, last kind, rings opened here, and before)."""
    zeros = jnp.zeros((rows,), jnp.int32)
    return zeros, zeros, jnp.full((rows,), START, jnp.int32), zeros, zeros


def advance(state, table, token: jax.Array):
    """The state after `token` (rows' tokens [B], or any shape broadcasting against the [B] arrays)."""
    depth, rings, _, here, before = state
    kind = jnp.asarray(table["kind"])[token]
    bit = jnp.asarray(table["ring"])[token]
    is_atom = kind == ATOM
    return (
        depth + jnp.asarray(table["depth"])[token],
        rings ^ bit,
        jnp.where(kind >= END, START, kind),  # rows that ended: a state in FOLLOWS all the same
        jnp.where(is_atom, 0, here | (bit & ~rings)),
        jnp.where(is_atom, here, before),
    )


def finish_cost(state) -> jax.Array:
    """The fewest tokens that surely end the string from `state`: an atom where one is due (after
    "(" or a bond, or before a ring digit that may not follow), a second if the rings opened here
    are still open (they may not close on the next atom), a digit per open ring, a ")" per open
    branch, and EOS."""
    depth, rings, last, here, before = state
    open_rings = rings != 0
    blocked = (rings & (here | before)) != 0
    atom_due = (last == OPEN) | (last == BOND) | (last == START) | (open_rings & ((last == CLOSE) | blocked))
    second = atom_due & ((rings & here) != 0)
    return atom_due.astype(jnp.int32) + second.astype(jnp.int32) + jax.lax.population_count(rings) + depth + 1


def allowed(state, table, left) -> jax.Array:
    """bool [B, V]: the tokens that may come next, with `left` places after this one."""
    depth, rings, last, here, before = state
    kind = jnp.asarray(table["kind"])
    tokens = jnp.arange(kind.shape[0])
    ok = jnp.asarray(FOLLOWS)[last][:, kind]
    ok &= (kind != CLOSE) | (depth > 0)[:, None]
    ok &= (kind != END) | ((depth == 0) & (rings == 0))[:, None]
    ok &= (jnp.asarray(table["ring"])[None] & (rings & (here | before))[:, None]) == 0
    after = advance(tuple(x[:, None] for x in state), table, tokens[None])
    return ok & ((kind == END)[None] | (finish_cost(after) <= left))
