"""SMILES syntax and valences as a sampler's constraint: at each step, the tokens that keep a string
grammatical, within each atom's valence, and able to end within the sequence length. A draw
renormalized over those tokens writes grammatical SMILES that ends in time. Not checked: aromaticity
(whether a ring of aromatic atoms can be kekulized; the "kekule" representation has none), and two
ring bonds that join the same pair of atoms (rings opened together and closed together), which
RDKit's parser refuses.

Every token is of one kind (`syntax(vocab)`), and which kind may follow which is the table FOLLOWS.
A row's state completes the grammar: open branches (")" needs one), open ring closures (the end needs
none, nor an open branch), the rings opened at the current atom and at the one before it (a ring is
not closed onto either: RDKit refuses an atom bonded to itself and two bonds between one pair), and
the previous token's kind. A new ring takes the lowest free label, as RDKit's canonical SMILES do,
so a digit is either an open ring's or that one label. `finish_cost` is the fewest tokens that
surely end a string from a state; a token is allowed only when the state after it can still be
finished in the places left, and from any state with cost c some allowed token leads to cost c - 1,
so no row is ever left without a move.

Valences. Each atom token has a capacity: the most bond orders RDKit lets it carry, its explicit
hydrogens and charge counted (C 4, N 3, [N+] 4, [O-] 1, [C@@H] 3; aromatic atoms are not judged
alone and go unchecked). The state keeps the capacity left on the last atom of each branch level,
the pending bond order, whether the next atom opens a branch (it then bonds to the branch point, one
level down) and the order each open ring reserved. An atom, bond, ring digit or "(" is allowed only
where the atoms it bonds have the capacity for it, and while rings are open a move must leave an
atom (the current one, or a branch point below it) with capacity for a new atom to close them from.
The length can still corner a row (open rings, and too few places left for atoms with the capacity
to close them); such a row falls back to the syntax alone, so it still ends in time.
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
BONDS = {"-": 1, "=": 2, "#": 3, "$": 4, ":": 1, "/": 1, "\\": 1, "~": 1, ".": 0}  # token: bond order
DEPTH = 8  # branch levels whose valences are tracked; "(" is not allowed deeper
UNCHECKED = 8  # the capacity of an atom RDKit cannot judge alone (aromatic atoms)


# Capacities known without asking RDKit: a model folder carries its vocabulary's, so that a shipped
# model samples where RDKit is not installed (cvae_jax.apps.pretrained).
KNOWN_CAPACITY: dict[str, int] = {}


def capacity(token: str) -> int:
    """The most bond orders RDKit accepts on atom `token` (single bonds to as many methyl groups),
    its hydrogens and charge counted; UNCHECKED for an atom RDKit refuses even alone (aromatic)."""
    if token not in KNOWN_CAPACITY:
        KNOWN_CAPACITY[token] = _rdkit_capacity(token)
    return KNOWN_CAPACITY[token]


def atom_capacities(vocab: Vocab) -> dict[str, int]:
    """{atom token: capacity} of a vocabulary's atom tokens (what a model folder keeps)."""
    table = syntax(vocab)
    if table is None:
        return {}
    return {t: int(c) for t, k, c in zip(vocab.tokens, table["kind"], table["capacity"]) if k == ATOM}


def _rdkit_capacity(token: str) -> int:
    from cvae_jax.molecules.chem import _rdkit

    Chem, _ = _rdkit()
    best = -1
    for n in range(UNCHECKED):
        text = token + "(C)" * max(0, n - 1) + ("C" if n else "")
        if Chem.MolFromSmiles(text) is None:
            break
        best = n
    return UNCHECKED if best < 0 else best


def syntax(vocab: Vocab) -> dict[str, np.ndarray] | None:
    """A SMILES vocabulary's token tables (None for SELFIES, which needs no constraint): "kind" int32
    [V] (PAD and BOS are NEVER, EOS is END), "depth" int32 [V] (+1 for "(", -1 for ")"), "ring"
    int32 [V], the bit of a ring-closure label (0 for the other tokens), "label" its index (0 for
    the others), "order" the bond order of a bond token and "capacity" an atom token's (RDKit)."""
    if vocab.representation == "selfies":
        return None
    labels = sorted(t for t in vocab.tokens if t.isdigit() or t.startswith("%"))
    if len(labels) > 31:
        raise ValueError(f"{len(labels)} ring-closure labels; constrained sampling tracks at most 31")
    kind, depth, ring, order, cap = [], [], [], [], []
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
        order.append(BONDS[token] if k == BOND else 0)
        cap.append(capacity(token) if k == ATOM else 0)
    label = [labels.index(t) if t in labels else 0 for t in vocab.tokens]
    return {
        name: np.array(values, np.int32)
        for name, values in [
            ("kind", kind),
            ("depth", depth),
            ("ring", ring),
            ("label", label),
            ("order", order),
            ("capacity", cap),
        ]
    }


def start(rows: int) -> tuple[jax.Array, ...]:
    """The state of `rows` empty strings: the syntax (depth, rings, last kind, rings opened here, and
    before) and the valences (capacity left per branch level [rows, DEPTH], pending bond order, -1
    for none, whether the next atom opens a branch, and the order each ring label reserved [rows, 31])."""
    zeros = jnp.zeros((rows,), jnp.int32)
    syntax_state = (zeros, zeros, jnp.full((rows,), START, jnp.int32), zeros, zeros)
    valence_state = (
        jnp.zeros((rows, DEPTH), jnp.int32),
        jnp.full((rows,), -1, jnp.int32),
        jnp.zeros((rows,), bool),
        jnp.zeros((rows, 31), jnp.int32),
    )
    return syntax_state + valence_state


def _advance_syntax(state, table, token):
    depth, rings, _, here, before = state[:5]
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


def _bonds(state):
    """Per row: the level the next atom bonds to, the capacity left there, the order of the next bond
    (pending, else 1; 0 for the first atom), and the capacity left on the current atom."""
    depth, _, last, _, _, left, pending, fresh, _ = state
    anchor = jnp.clip(depth - fresh.astype(jnp.int32), 0, DEPTH - 1)
    level = jnp.clip(depth, 0, DEPTH - 1)
    order = jnp.where(last == START, 0, jnp.where(pending >= 0, pending, 1))
    at = lambda i: jnp.take_along_axis(left, i[:, None], axis=1)[:, 0]  # noqa: E731
    return anchor, at(anchor), order, level, at(level)


def advance(state, table, token: jax.Array):
    """The state after `token`, one per row [B]."""
    _, rings, _, _, _, left, _, fresh, reserved = state
    kind = jnp.asarray(table["kind"])[token]
    label = jnp.asarray(table["label"])[token]
    anchor, _, order, level, _ = _bonds(state)  # order: the pending bond's, else 1 (no ring digit at START)
    levels = jnp.arange(DEPTH)[None]
    # an atom: the level it bonds to gives up the bond's order, its own level holds what it has left
    is_atom = (kind == ATOM)[:, None]
    new_left = left - jnp.where(is_atom & (levels == anchor[:, None]), order[:, None], 0)
    new_left = jnp.where(
        is_atom & (levels == level[:, None]), (jnp.asarray(table["capacity"])[token] - order)[:, None], new_left
    )
    # a ring digit: opening reserves the bond's order, closing uses the order reserved
    is_ring = kind == RING
    opening = is_ring & ((rings & jnp.asarray(table["ring"])[token]) == 0)
    ring_order = jnp.take_along_axis(reserved, label[:, None], axis=1)[:, 0]
    used = jnp.where(opening, order, ring_order)
    new_left = new_left - jnp.where(is_ring[:, None] & (levels == level[:, None]), used[:, None], 0)
    slots = jnp.arange(reserved.shape[1])[None]
    reserved = jnp.where((opening[:, None]) & (slots == label[:, None]), used[:, None], reserved)
    return _advance_syntax(state, table, token) + (
        new_left,
        jnp.where(kind == BOND, jnp.asarray(table["order"])[token], -1),
        jnp.where(kind == OPEN, True, jnp.where(kind == BOND, fresh, False)),
        reserved,
    )


def finish_cost(state) -> jax.Array:
    """The fewest tokens that surely end the string from `state`: an atom where one is due (after
    "(" or a bond, or before a ring digit that may not follow), a second if the rings opened here
    are still open (they may not close on the next atom), a digit per open ring, a ")" per open
    branch, and EOS."""
    depth, rings, last, here, before = state[:5]
    open_rings = rings != 0
    blocked = (rings & (here | before)) != 0
    atom_due = (last == OPEN) | (last == BOND) | (last == START) | (open_rings & ((last == CLOSE) | blocked))
    second = atom_due & ((rings & here) != 0)
    return atom_due.astype(jnp.int32) + second.astype(jnp.int32) + jax.lax.population_count(rings) + depth + 1


def allowed(state, table, left, fallback: bool = True) -> jax.Array:
    """bool [B, V]: the tokens that may come next, with `left` places after this one: grammatical,
    within the valences, and finishable in time; a row the valences corner keeps the syntax alone
    (with `fallback`; without, such a row has no token allowed)."""
    depth, rings, last, here, before, spare, pending, fresh, reserved = state
    kind = jnp.asarray(table["kind"])
    ring = jnp.asarray(table["ring"])
    tokens = jnp.arange(kind.shape[0])
    ok = jnp.asarray(FOLLOWS)[last][:, kind]
    ok &= (kind != CLOSE) | (depth > 0)[:, None]
    ok &= (kind != END) | ((depth == 0) & (rings == 0))[:, None]
    ok &= (kind != RING) | ~fresh[:, None]  # "(" and a bond need an atom before a ring digit
    ok &= (ring[None] & (rings & (here | before))[:, None]) == 0
    # a new ring takes the lowest free label, as canonical SMILES (RDKit's) write them
    ok &= (kind != RING) | ((ring[None] & rings[:, None]) != 0) | (ring[None] == (~rings & (rings + 1))[:, None])
    after = _advance_syntax(tuple(x[:, None] for x in state[:5]), table, tokens[None])
    ok &= (kind == END)[None] | (finish_cost(after) <= left)
    # valences: the bonds must fit, and a row with open rings must keep an atom with capacity left
    # (the current one, or one down its branches) that a new atom can bond to and close them from
    anchor, anchor_left, order, _, current_left = _bonds(state)
    capacity = jnp.asarray(table["capacity"])[None]
    closing = (rings[:, None] & ring[None]) != 0
    reserved_order = reserved[:, jnp.asarray(table["label"])]  # [B, V]
    ring_order = jnp.where(closing, reserved_order, order[:, None])
    levels = jnp.arange(DEPTH)[None]
    below = jnp.where(levels < depth[:, None], spare, 0)
    below_atom = (below - jnp.where(fresh[:, None] & (levels == anchor[:, None]), order[:, None], 0)).max(axis=1)
    below = below.max(axis=1)
    is_kind = [kind[None] == k for k in (ATOM, BOND, RING, OPEN)]
    fits = jnp.select(
        is_kind,
        [
            (order[:, None] <= anchor_left[:, None]) & (order[:, None] <= capacity),
            jnp.asarray(table["order"])[None] <= anchor_left[:, None],
            (ring_order <= current_left[:, None])
            & ~(closing & (pending[:, None] >= 0) & (pending[:, None] != ring_order)),
            (current_left >= 1)[:, None] & (depth < DEPTH - 1)[:, None],
        ],
        True,
    )
    finishable = jnp.select(
        [is_kind[0], is_kind[2], kind[None] == CLOSE],
        [
            (below_atom[:, None] >= 1) | (capacity - order[:, None] >= 1),
            (below[:, None] >= 1) | (current_left[:, None] - ring_order >= 1),
            (below >= 1)[:, None],
        ],
        True,
    )
    checked = ok & fits & (finishable | ((rings[:, None] ^ ring[None]) == 0))
    if not fallback:
        return checked
    return jnp.where(checked.any(axis=1, keepdims=True), checked, ok)


FEATURES = 31  # the width of `features`


def features(state) -> jax.Array:
    """float32 [B, FEATURES]: what the grammar knows of each row before its next token, as one-hot
    groups for a decoder to read: branch depth (0-4+), open rings (0-3+), which of the labels 1-4
    are open, whether an open ring may not close on the current atom, the previous token's kind, the
    capacity left on the atom the next one would bond to (0-4+; unchecked atoms count as 4+), the
    pending bond order (none, 0-3) and whether the next atom opens a branch."""
    depth, rings, last, here, before, _, pending, fresh, _ = state
    _, bonds_to, _, _, _ = _bonds(state)

    def one_hot(x, n):
        return jax.nn.one_hot(jnp.clip(x, 0, n - 1), n)

    parts = [
        one_hot(depth, 5),
        one_hot(jax.lax.population_count(rings), 4),
        ((rings[:, None] >> jnp.arange(4)[None]) & 1).astype(jnp.float32),
        ((rings & (here | before)) != 0).astype(jnp.float32)[:, None],
        one_hot(last, 6),
        one_hot(bonds_to, 5),
        one_hot(pending + 1, 5),
        fresh.astype(jnp.float32)[:, None],
    ]
    return jnp.concatenate(parts, axis=1)


def replay(tokens: jax.Array, table) -> jax.Array:
    """float32 [B, L, FEATURES]: `features` before each position of token rows [B, L] (the state
    after the tokens before it), as a decoder fed the true previous tokens sees them."""

    def body(state, token):
        return advance(state, table, token), features(state)

    _, out = jax.lax.scan(body, start(tokens.shape[0]), tokens.T)
    return out.transpose(1, 0, 2)
