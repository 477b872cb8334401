"""Conditional molecule generation: SMILES tokens, the GRU, the sequence ELBO and a CVAE trained on
real MOSES molecules, each checked against a second implementation, a closed form or a property."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvae_jax import cli, molecules
from cvae_jax.config import CheckpointConfig, ConfigError, ParallelConfig, TrainConfig, apply_overrides
from cvae_jax.core import priors
from cvae_jax.data import smiles
from cvae_jax.molecules import chem, grammar
from cvae_jax.molecules import model as sequence
from cvae_jax.nn import recurrent
from cvae_jax.training.checkpoint import CheckpointError, Checkpoints

# RDKit computes the molecules' properties (the conditions) and checks validity.
pytest.importorskip("rdkit", reason="needs RDKit, the [chem] extra: pip install -e '.[chem]'")

# The first 1,200 training and 400 test molecules of MOSES (tests/data/README.md).
DATA = Path(__file__).resolve().parent / "data"
TRAIN, TEST = str(DATA / "moses_train_1200.csv.gz"), str(DATA / "moses_test_400.csv.gz")


@pytest.fixture(scope="module")
def moses():
    return smiles.load_csv(TRAIN)


def test_real_moses_smiles_round_trip_through_tokens(moses):
    vocab = smiles.build_vocab(moses)
    length = 1 + max(len(smiles.tokenize(s)) for s in moses)
    rows = smiles.encode(moses, vocab, length)
    assert smiles.decode(rows, vocab) == moses
    assert np.all(np.sum(rows == smiles.EOS, axis=1) == 1)
    assert np.array_equal(smiles.lengths(rows), [len(smiles.tokenize(s)) + 1 for s in moses])
    assert {"Cl", "Br", "[nH]"} <= set(vocab.tokens)  # multi-character tokens stay whole
    assert smiles.Vocab.from_json(vocab.to_json()) == vocab


def test_bad_smiles_input_gets_clear_errors(moses, tmp_path):
    vocab = smiles.build_vocab(moses[:100])
    with pytest.raises(ValueError, match="position 2"):
        smiles.tokenize("CC{C")
    with pytest.raises(ValueError, match="at most 3"):
        smiles.encode(["CCCCC"], vocab, 4)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        smiles.encode(["C[Se]C"], vocab, 10)
    with pytest.raises(FileNotFoundError, match="moses_csv"):
        smiles.load_csv(tmp_path / "missing.csv.gz")
    (tmp_path / "x.csv").write_text("smiles_typo\nCCO\n")
    with pytest.raises(ValueError, match="no 'SMILES' column"):
        smiles.load_csv(tmp_path / "x.csv")
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="could not be read"):
        smiles.load_csv(tmp_path / "bad.csv.gz")
    with pytest.raises(ConfigError, match="properties"):
        molecules.recipe(TRAIN, TEST, properties=("colour",))
    with pytest.raises(ConfigError, match="batch_size"):
        molecules.recipe(TRAIN, TEST, num_train=10)
    # the image runs' checks of the train and parallel sections apply to molecule runs too
    with pytest.raises(ConfigError, match="parallel.num_devices must be >= 0"):
        molecules.recipe(TRAIN, TEST, parallel=ParallelConfig(num_devices=-1))
    with pytest.raises(ConfigError, match="train.learning_rate must be a finite number"):
        molecules.recipe(TRAIN, TEST, train=TrainConfig(learning_rate=float("nan")))


def test_gru_equals_flax_gru_cell_and_stops_at_each_rows_length():
    hidden, features = 16, 7
    inputs = jax.random.normal(jax.random.key(0), (3, 9, features))
    rnn = nn.RNN(nn.GRUCell(hidden), return_carry=True)
    variables = rnn.init(jax.random.key(1), inputs)
    leaves, tree = jax.tree.flatten(variables)  # every weight random, biases included (they start at 0)
    keys = jax.random.split(jax.random.key(8), len(leaves))
    variables = jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
    carry, expected = rnn.apply(variables, inputs)
    p = variables["params"]["cell"]
    w_x = jnp.concatenate([p["ir"]["kernel"], p["iz"]["kernel"], p["in"]["kernel"]], axis=1)
    b_x = jnp.concatenate([p["ir"]["bias"], p["iz"]["bias"], p["in"]["bias"]])
    w_h = jnp.concatenate([p["hr"]["kernel"], p["hz"]["kernel"], p["hn"]["kernel"]], axis=1)
    states, last = recurrent.run(inputs @ w_x + b_x, jnp.zeros((3, hidden)), w_h, p["hn"]["bias"])
    np.testing.assert_allclose(states, expected, atol=1e-5)
    np.testing.assert_allclose(last, carry, atol=1e-5)
    lengths = jnp.array([9, 4, 1])
    _, stopped = recurrent.run(inputs @ w_x + b_x, jnp.zeros((3, hidden)), w_h, p["hn"]["bias"], lengths)
    np.testing.assert_allclose(stopped, states[jnp.arange(3), lengths - 1], atol=1e-6)


@pytest.fixture(scope="module")
def tiny(moses):
    vocab = smiles.build_vocab(moses)
    length = 1 + max(len(smiles.tokenize(s)) for s in moses)
    model = sequence.build(
        vocab.size, length, latent_dim=4, condition_dim=2, embed_dim=8, encoder_hidden=16, decoder_hidden=24
    )
    tokens = jnp.asarray(smiles.encode(moses[:6], vocab, length))
    condition = jax.random.normal(jax.random.key(2), (6, 2))
    params = jax.jit(model.init)(jax.random.key(3), tokens, condition)
    return model, params, tokens, condition


def test_greedy_generation_is_what_teacher_forcing_scores_highest(tiny):
    model, params, _, condition = tiny
    z = jax.random.normal(jax.random.key(4), (6, 4)) * 3
    generated = model.apply(params, z, condition, jax.random.key(5), 0.0, method=model.generate)
    logits = model.apply(params, z, condition, generated, method=model.decode)["token_logits"]
    # Up to the first EOS every generated token is the argmax given the ones before it; after it, PAD.
    ended = jnp.cumsum(generated == smiles.EOS, axis=1) - (generated == smiles.EOS)
    live = ended == 0
    assert jnp.all(jnp.where(live, jnp.argmax(logits, -1) == generated, generated == smiles.PAD))
    sampled = model.apply(params, z, condition, jax.random.key(6), 1.0, method=model.generate)
    again = model.apply(params, z, condition, jax.random.key(6), 1.0, method=model.generate)
    assert jnp.array_equal(sampled, again) and not jnp.array_equal(sampled, generated)


@pytest.mark.slow
def test_a_stacked_decoder_generates_what_its_teacher_forcing_scores_highest(moses):
    """Three stacked GRUs: step-by-step generation (the layers updated in turn each step) and teacher
    forcing (each layer run over the whole sequence, then the next) are two computations of one model."""
    vocab = smiles.build_vocab(moses)
    length = 1 + max(len(smiles.tokenize(s)) for s in moses)
    model = sequence.build(
        vocab.size, length, latent_dim=4, embed_dim=8, encoder_hidden=16, decoder_hidden=24, decoder_layers=3
    )
    tokens = jnp.asarray(smiles.encode(moses[:6], vocab, length))
    params = jax.jit(model.init)(jax.random.key(3), tokens)
    assert {"recurrent", "upper_recurrent_0", "upper_recurrent_1"} <= set(params["params"]["decoder"])  # 3 GRUs
    z = jax.random.normal(jax.random.key(4), (6, 4)) * 3
    generated = model.apply(params, z, None, jax.random.key(5), 0.0, method=model.generate)
    logits = model.apply(params, z, None, generated, method=model.decode)["token_logits"]
    live = (jnp.cumsum(generated == smiles.EOS, axis=1) - (generated == smiles.EOS)) == 0
    assert jnp.all(jnp.where(live, jnp.argmax(logits, -1) == generated, generated == smiles.PAD))


@pytest.mark.slow
def test_a_grammar_reading_decoder_generates_what_its_teacher_forcing_scores_highest(moses):
    """Generation tracks the grammar's state step by step, teacher forcing replays it over the whole
    row: two computations of the features the decoder reads, so greedy draws must be the argmax."""
    texts = [chem.kekule(s) for s in moses[:200]]
    vocab = smiles.build_vocab(texts, "kekule")
    length = 1 + max(len(smiles.tokenize(t)) for t in texts)
    kwargs = dict(latent_dim=4, embed_dim=8, encoder_hidden=16, decoder_hidden=24)
    model = sequence.build(vocab.size, length, grammar_table=grammar.syntax(vocab), **kwargs)
    tokens = jnp.asarray(smiles.encode(texts[:6], vocab, length))
    params = jax.jit(model.init)(jax.random.key(3), tokens)
    assert "structure" in params["params"]["decoder"]
    z = jax.random.normal(jax.random.key(4), (6, 4)) * 3
    for table in (None, grammar.syntax(vocab)):  # free, and constrained
        generated = model.apply(params, z, None, jax.random.key(5), 0.0, table, method=model.generate)
        logits = model.apply(params, z, None, generated, method=model.decode)["token_logits"]
        live = (jnp.cumsum(generated == smiles.EOS, axis=1) - (generated == smiles.EOS)) == 0
        if table is None:
            assert jnp.all(jnp.where(live, jnp.argmax(logits, -1) == generated, generated == smiles.PAD))
        else:  # the argmax over the tokens the constraint allows
            allowed, state = [], grammar.start(6)
            for t in range(length):
                allowed.append(grammar.allowed(state, table, length - t - 1))
                state = grammar.advance(state, table, generated[:, t])
            masked = jnp.where(jnp.stack(allowed, 1), logits, -jnp.inf)
            assert jnp.all(jnp.where(live, jnp.argmax(masked, -1) == generated, generated == smiles.PAD))


@pytest.mark.slow
def test_guided_greedy_draws_are_the_argmax_of_the_guided_teacher_forced_logits(moses):
    """Guidance w: generation runs the decoder twice per step (under c and under 0) inside one scan;
    teacher forcing the drawn rows under c and under 0 separately must give logits whose
    l(c) + w (l(c) - l(0)) has the drawn token as its argmax at every live step."""
    texts = [chem.kekule(s) for s in moses[:200]]
    vocab = smiles.build_vocab(texts, "kekule")
    length = 1 + max(len(smiles.tokenize(t)) for t in texts)
    kwargs = dict(latent_dim=4, condition_dim=2, embed_dim=8, encoder_hidden=16, decoder_hidden=24)
    model = sequence.build(vocab.size, length, grammar_table=grammar.syntax(vocab), **kwargs)
    tokens = jnp.asarray(smiles.encode(texts[:6], vocab, length))
    condition = 3 * jax.random.normal(jax.random.key(2), (6, 2))
    params = jax.jit(model.init)(jax.random.key(3), tokens, condition)
    z = jax.random.normal(jax.random.key(4), (6, 4))
    plain = model.apply(params, z, condition, jax.random.key(5), 0.0, None, 0.0, method=model.generate)
    for w in (1.0, 4.0):
        drawn = model.apply(params, z, condition, jax.random.key(5), 0.0, None, w, method=model.generate)
        asked, contrast = (
            model.apply(params, z, c, drawn, method=model.decode)["token_logits"]
            for c in (condition, jnp.zeros_like(condition))
        )
        live = (jnp.cumsum(drawn == smiles.EOS, axis=1) - (drawn == smiles.EOS)) == 0
        best = jnp.argmax(asked + w * (asked - contrast), -1)
        assert jnp.all(jnp.where(live, best == drawn, drawn == smiles.PAD))
    assert not jnp.array_equal(drawn, plain)  # w = 4 changes what is drawn


def test_grammar_features_follow_a_molecule_token_by_token():
    """The features before each token of CC(=O)O (hand-computed) and, on MOSES molecules, depth and open
    rings against a second walk of the strings."""
    vocab = smiles.build_vocab(["CC(=O)O", "C1CC1"], "kekule")
    rows = jnp.asarray(smiles.encode(["CC(=O)O"], vocab, 9))
    f = np.asarray(grammar.replay(rows, grammar.syntax(vocab)))[0]
    group = {"depth": (0, 5), "capacity": (20, 25), "pending": (25, 30)}
    value = {name: f[:, a:b].argmax(1).tolist() for name, (a, b) in group.items()}
    #            before:  C  C  (  =  O  )  O  EOS
    assert value["depth"][:8] == [0, 0, 0, 1, 1, 1, 0, 0]
    assert value["capacity"][1:8] == [4, 3, 3, 3, 0, 1, 1]  # free valence of the atom bonded next
    assert value["pending"][:8] == [0, 0, 0, 0, 3, 0, 0, 0]  # "=" pending before the O (order 2, shifted by 1)
    assert f.shape[1] == grammar.FEATURES
    texts = [chem.kekule(s) for s in smiles.load_csv(TRAIN, 100)]
    vocab = smiles.build_vocab(texts, "kekule")
    length = 1 + max(len(smiles.tokenize(t)) for t in texts)
    f = np.asarray(grammar.replay(jnp.asarray(smiles.encode(texts, vocab, length)), grammar.syntax(vocab)))
    for one_hot in ((0, 5), (5, 9), (14, 20), (20, 25), (25, 30)):
        assert np.all(f[:, :, one_hot[0] : one_hot[1]].sum(-1) == 1)
    for row, text in zip(f, texts):
        depth, open_rings = 0, set()
        for t, token in enumerate(smiles.tokenize(text)):
            assert row[t, :5].argmax() == min(depth, 4) and row[t, 5:9].argmax() == min(len(open_rings), 3)
            depth += {"(": 1, ")": -1}.get(token, 0)
            open_rings ^= {token} if token.isdigit() else set()


def test_syntax_table_classifies_smiles_tokens():
    vocab = smiles.Vocab(smiles.SPECIAL + ("(", ")", "1", "%12", "=", "C", "Cl", "[nH]", "c"))
    table = grammar.syntax(vocab)
    kinds = dict(zip(vocab.tokens, table["kind"].tolist()))
    assert [kinds[t] for t in smiles.SPECIAL] == [grammar.NEVER, grammar.NEVER, grammar.END]
    assert (kinds["("], kinds[")"], kinds["1"], kinds["%12"], kinds["="]) == (
        grammar.OPEN,
        grammar.CLOSE,
        grammar.RING,
        grammar.RING,
        grammar.BOND,
    )
    assert all(kinds[t] == grammar.ATOM for t in ("C", "Cl", "[nH]", "c"))
    assert table["depth"].tolist() == [0, 0, 0, 1, -1, 0, 0, 0, 0, 0, 0, 0]
    rings = dict(zip(vocab.tokens, table["ring"].tolist()))
    assert {rings["1"], rings["%12"]} == {1, 2} and sum(table["ring"] != 0) == 2  # one bit per label
    assert grammar.syntax(smiles.Vocab(smiles.SPECIAL + ("[C]",), "selfies")) is None


def _parses(text: str) -> bool:
    """Whether RDKit's SMILES parser reads `text`, chemistry (valences, aromaticity) not checked."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem.MolFromSmiles(text, sanitize=False) is not None


def _grammatical(tokens: list[str]) -> bool:
    """SMILES syntax, checked on the token list (a second implementation of what the sampler keeps):
    starts with an atom; "(" after an atom, digit or ")", followed by an atom or bond; ")" closes an
    open branch and follows an atom, digit or ")"; a digit follows an atom, digit or bond; a bond
    follows anything but a bond; it ends with nothing open, on an atom, digit or ")"."""

    def kind(token: str) -> str:
        if token in ("(", ")"):
            return token
        if token in set("=#-$:/\\~."):
            return "bond"
        return "digit" if token.isdigit() or token.startswith("%") else "atom"

    depth, open_rings, prev = 0, set(), None  # prev: the kind of the token before
    for token in tokens:
        k = kind(token)
        if k == "(":
            ok, depth = prev in ("atom", "digit", ")"), depth + 1
        elif k == ")":
            ok, depth = depth > 0 and prev in ("atom", "digit", ")"), depth - 1
        elif k == "digit":
            ok, open_rings = prev in ("atom", "digit", "bond"), open_rings ^ {token}
        elif k == "bond":
            ok = prev in ("atom", "digit", "(", ")")
        else:
            ok = True
        if not ok:
            return False
        prev = k
    return depth == 0 and not open_rings and prev in ("atom", "digit", ")")


@pytest.mark.slow
def test_constrained_sampling_writes_grammatical_smiles_that_end_in_time(moses):
    """An untrained decoder with random weights draws near-uniform token soup. Under the syntax
    constraint every row must end within the length and be grammatical (checked by a second
    implementation), and RDKit's parser, the independent judge, must read far more of them than of the
    unconstrained draws (what it still refuses is soup's rings: two ring bonds between one pair of atoms)."""
    vocab = smiles.build_vocab(moses)
    model = sequence.build(vocab.size, 40, latent_dim=4, embed_dim=8, encoder_hidden=16, decoder_hidden=24)
    tokens = jnp.asarray(smiles.encode(moses[:4], vocab, 40))
    params = jax.jit(model.init)(jax.random.key(3), tokens)
    z = jax.random.normal(jax.random.key(4), (600, 4))
    table = grammar.syntax(vocab)
    free = np.asarray(model.apply(params, z, None, jax.random.key(5), 1.0, method=model.generate))
    kept = np.asarray(model.apply(params, z, None, jax.random.key(5), 1.0, table, method=model.generate))
    assert (kept == smiles.EOS).any(axis=1).all()  # every row ends within the length, EOS included
    texts = smiles.decode(kept, vocab)
    assert all(_grammatical(smiles.tokenize(s)) for s in texts)
    free_texts = smiles.decode(free, vocab)
    assert sum(_grammatical(smiles.tokenize(s)) for s in free_texts) < 0.1 * len(free_texts)  # the check bites
    parsed, parsed_free = np.mean([_parses(s) for s in texts]), np.mean([_parses(s) for s in free_texts])
    assert parsed > 0.5 and parsed > 5 * parsed_free
    greedy = model.apply(params, z[:50], None, jax.random.key(6), 0.0, table, method=model.generate)
    assert all(_grammatical(smiles.tokenize(s)) for s in smiles.decode(greedy, vocab))
    data = molecules.MoleculeData(vocab, 40, (), np.zeros(0), np.ones(0), np.zeros(0), {}, {}, [], [])
    drawn = molecules.generate(model, params, jax.random.key(7), None, data.vocab, num=8, constrained=True)
    assert len(drawn) == 8 and all(_grammatical(smiles.tokenize(s)) for s in drawn)


def test_atom_capacities_are_rdkit_valences_with_hydrogens_and_charges():
    expected = {"C": 4, "N": 3, "O": 2, "F": 1, "Cl": 1, "S": 6, "[N+]": 4, "[O-]": 1, "[C@@H]": 3, "[NH2+]": 2}
    assert {t: grammar.capacity(t) for t in expected} == expected
    assert grammar.capacity("c") == grammar.capacity("[nH]") == grammar.UNCHECKED  # aromatic: not alone


@pytest.mark.slow
@pytest.mark.parametrize("representation", ["smiles", "kekule"])
def test_the_constraint_refuses_no_token_of_a_real_molecule(moses, representation):
    """Completeness: walking MOSES molecules token by token, each next token is among those allowed."""
    texts = moses[:300] if representation == "smiles" else [chem.kekule(s) for s in moses[:300]]
    vocab = smiles.build_vocab(texts, representation)
    length = 1 + max(len(smiles.tokenize(t)) for t in texts)
    rows = jnp.asarray(smiles.encode(texts, vocab, length))
    table, state = grammar.syntax(vocab), grammar.start(len(texts))
    for t in range(length):
        ok = np.asarray(grammar.allowed(state, table, length - t - 1))
        token = np.asarray(rows[:, t])
        live = (t == 0) | (np.asarray(rows[:, t - 1]) != smiles.EOS) & (np.asarray(rows[:, t - 1]) != smiles.PAD)
        refused = live & ~ok[np.arange(len(texts)), token]
        assert not refused.any(), [texts[i] for i in np.flatnonzero(refused)][:3]
        state = grammar.advance(state, table, rows[:, t])


@pytest.mark.slow
def test_valence_constraint_on_kekule_soup_leaves_no_valence_errors(moses):
    """Token soup from a random decoder over Kekulé SMILES. RDKit, the independent judge, finds no atom
    over its valence in any row that the valences never cornered (replayed: every token was allowed
    without the fallback to the syntax alone), and those rows are nearly all of them; under the
    syntax alone the soup is full of such atoms."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    texts = [chem.kekule(s) for s in moses]
    vocab = smiles.build_vocab(texts, "kekule")
    length = 50
    model = sequence.build(vocab.size, length, latent_dim=4, embed_dim=8, encoder_hidden=16, decoder_hidden=24)
    params = jax.jit(model.init)(jax.random.key(3), jnp.asarray(smiles.encode(texts[:4], vocab, length)))
    z = jax.random.normal(jax.random.key(4), (600, 4))
    table = grammar.syntax(vocab)

    def over_valence(text: str) -> bool:
        mol = Chem.MolFromSmiles(text, sanitize=False)
        try:
            Chem.SanitizeMol(mol)
        except Chem.AtomValenceException:
            return True
        except Exception:
            return False
        return False

    def draw(table):
        return model.apply(params, z, None, jax.random.key(5), 1.0, table, method=model.generate)

    # the syntax alone: every atom unchecked, every bond of order 0
    free = smiles.decode(
        draw({**table, "capacity": np.full_like(table["capacity"], grammar.UNCHECKED), "order": 0 * table["order"]}),
        vocab,
    )
    rows = draw(table)
    kept = smiles.decode(rows, vocab)
    state, uncornered = grammar.start(len(kept)), np.ones(len(kept), bool)
    for t in range(length):
        strict = np.asarray(grammar.allowed(state, table, length - t - 1, fallback=False))
        token = np.asarray(rows[:, t])
        uncornered &= (token == smiles.PAD) | strict[np.arange(len(kept)), token]
        state = grammar.advance(state, table, rows[:, t])
    assert all(_grammatical(smiles.tokenize(s)) for s in free + kept)
    assert sum(map(over_valence, free)) > 0.2 * len(free)
    assert uncornered.mean() > 0.9
    assert not any(over_valence(s) for s, ok in zip(kept, uncornered) if ok)
    assert np.mean([Chem.MolFromSmiles(s) is not None for s in kept]) > 0.9


def test_sequence_elbo_terms_match_a_direct_computation(tiny):
    model, params, tokens, condition = tiny
    terms = sequence.make_terms(model)
    key = jax.random.key(7)
    out = terms(params, {"tokens": tokens, "condition": condition}, key)
    mean, log_var = model.apply(params, tokens, condition, method=model.encode)
    z = mean + np.exp(0.5 * log_var) * jax.random.normal(jax.random.fold_in(key, 1), mean.shape)
    logits = np.asarray(model.apply(params, z, condition, tokens, method=model.decode)["token_logits"], np.float64)
    log_p = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    tok = np.asarray(tokens)
    recon = np.array(
        [-sum(log_p[b, t, tok[b, t]] for t in range(tok.shape[1]) if tok[b, t] != smiles.PAD) for b in range(len(tok))]
    )
    kl = 0.5 * np.sum(np.exp(log_var) + mean**2 - 1 - log_var, axis=1)
    np.testing.assert_allclose(out["recon"], recon, rtol=1e-5)
    np.testing.assert_allclose(out["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(out["neg_elbo"], recon + kl, rtol=1e-5)
    # Each row is scored from its own tokens only: decoding one row alone gives its logits in the batch.
    alone = model.apply(params, z[:1], condition[:1], tokens[:1], method=model.decode)["token_logits"]
    np.testing.assert_allclose(alone[0], logits[0], atol=1e-5)
    # Word dropout hides previous tokens in the training loss only; the reported ELBO is the model's.
    batch = {"tokens": tokens, "condition": condition}
    np.testing.assert_array_equal(sequence.make_terms(model, training=True)(params, batch, key)["recon"], out["recon"])
    dropping = model.clone(decoder=model.decoder.clone(word_dropout=0.5))
    np.testing.assert_array_equal(sequence.make_terms(dropping)(params, batch, key)["recon"], out["recon"])
    assert np.all(sequence.make_terms(dropping, training=True)(params, batch, key)["recon"] != out["recon"])
    with pytest.raises(ValueError, match="tokens must be integers"):
        model.apply(params, tokens.astype(jnp.float32), condition, method=model.encode)
    with pytest.raises(ValueError, match="condition must have shape"):
        model.apply(params, tokens, condition[:3], method=model.encode)


def test_chem_metrics_and_properties_against_hand_counts():
    assert chem.canonical("OCC") == chem.canonical("CCO") and chem.canonical("C1CC") is None
    metrics = chem.sample_metrics(["CCO", "OCC", "c1ccccc1", "C1CC", "", "Xx"], ["CCO"])
    assert metrics == {"num_samples": 6, "validity": 3 / 6, "uniqueness": 2 / 3, "novelty": 1 / 2}
    props = chem.properties(["CCO", "C1CC"], ("mw", "tpsa"))
    np.testing.assert_allclose(props[0], [2 * 12.011 + 6 * 1.008 + 15.999, 20.23], atol=1e-2)  # O-H: 20.23 A^2
    assert np.isnan(props[1]).all()


@pytest.mark.slow  # starts a process pool
def test_the_process_pool_maps_as_a_loop_does(moses, monkeypatch):
    """Lists of at least chem.POOL_MIN_ITEMS go to a pool of processes; its rows are the loop's, in order."""
    rows = chem.properties(moses[:600], ("logp", "mw"), jobs=1)
    pools, get_context = [], chem.multiprocessing.get_context
    monkeypatch.setattr(chem.multiprocessing, "get_context", lambda method: pools.append(method) or get_context(method))
    monkeypatch.setattr(chem, "POOL_MIN_ITEMS", 512)
    np.testing.assert_array_equal(chem.properties(moses[:600], ("logp", "mw"), jobs=2), rows)
    assert pools == ["spawn"]  # the pool was used
    np.testing.assert_array_equal(chem.properties(moses[:100], ("logp", "mw"), jobs=2), rows[:100])
    assert pools == ["spawn"]  # and not for a shorter list


@pytest.fixture(scope="module")
def trained():
    cfg = molecules.recipe(
        TRAIN,
        TEST,
        num_train=1024,
        num_test=256,
        latent_dim=8,
        embed_dim=16,
        encoder_hidden=32,
        decoder_hidden=64,
        train=TrainConfig(epochs=4, batch_size=64, eval_batch_size=128, learning_rate=3e-3),
    )
    data = molecules.prepare(cfg)
    model, state, history = molecules.train(cfg, data)
    return cfg, data, model, state, history


def _tests(history):
    return [e for e in history if e["split"] == "test"]


@pytest.mark.slow
def test_molecule_cvae_learns_real_molecules_reproducibly(trained):
    cfg, data, model, state, history = trained
    assert data.train["tokens"].shape == (1024, data.length) and data.train["condition"].shape == (1024, 3)
    np.testing.assert_allclose(data.train["condition"].mean(0), 0, atol=1e-4)  # standardized on train
    np.testing.assert_allclose(data.train["condition"].std(0), 1, atol=1e-3)
    recon_0, recon_4 = _tests(history)[0]["recon"], _tests(history)[-1]["recon"]
    uniform = float(np.mean(smiles.lengths(data.test["tokens"]))) * np.log(data.vocab.size)
    assert recon_0 > 0.9 * uniform and recon_4 < 0.6 * uniform  # far better than guessing tokens
    rerun = molecules.train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1)), data)
    assert _tests(rerun[2])[1] == _tests(history)[1]  # same seed, same numbers
    drawn = molecules.generate(
        model, state.params, jax.random.key(0), data.condition_for({"logp": 2.0}, 50), data.vocab
    )
    assert len(drawn) == 50 and all(isinstance(s, str) for s in drawn)
    assert set("".join(drawn)) <= set("".join(data.vocab.tokens[3:]))
    condition = data.condition_for({"logp": 2.0}, 2)
    np.testing.assert_allclose(condition[:, 0], (2.0 - data.mean[0]) / data.std[0], rtol=1e-6)
    with pytest.raises(ValueError, match="not on"):
        data.condition_for({"qed": 0.5}, 2)


@pytest.mark.slow
def test_molecule_run_checkpoints_resumes_bit_identically_and_loads(tmp_path):
    cfg = molecules.recipe(
        TRAIN,
        TEST,
        num_train=256,
        num_test=64,
        latent_dim=4,
        embed_dim=8,
        encoder_hidden=16,
        decoder_hidden=16,
        train=TrainConfig(epochs=2, batch_size=64, eval_batch_size=64),
    )
    data = molecules.prepare(cfg)
    _, state, history = molecules.train(cfg, data, workdir=tmp_path / "run")
    steps = sorted(p for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert [p.name for p in steps] == ["4", "8"]  # one checkpoint per epoch of 4 steps
    shutil.rmtree(steps[-1])  # as if the process had died during epoch 2
    _, resumed, history_resumed = molecules.train(cfg, data, workdir=tmp_path / "run")
    assert _tests(history_resumed)[2] == _tests(history)[2]
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    model, params, saved = molecules.load(tmp_path / "run", "latest")
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    assert saved.vocab == data.vocab and np.array_equal(
        saved.condition_for({"mw": 300.0}, 1), data.condition_for({"mw": 300.0}, 1)
    )
    assert len(molecules.generate(model, params, jax.random.key(0), saved.condition_for({}, 3), saved.vocab)) == 3
    out = tmp_path / "drawn.smi"
    assert (
        cli.main(
            [
                "sample-molecules",
                "--workdir",
                str(tmp_path / "run"),
                "--num",
                "7",
                "--property",
                "logp=2.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    lines = out.read_text().splitlines()
    assert len(lines) == 7 and set("".join(lines)) <= set("".join(data.vocab.tokens[3:]))
    assert (
        cli.main(["sample-molecules", "--workdir", str(tmp_path / "run"), "--property", "logp=high", "--out", str(out)])
        == 2
    )
    assert (
        cli.main(["sample-molecules", "--workdir", str(tmp_path / "run"), "--property", "colour=1", "--out", str(out)])
        == 2
    )
    assert out.read_text().splitlines() == lines  # a failed call leaves the earlier output alone
    # the MOSES metrics of molecules drawn from the run, asked for the properties of test molecules
    scores, drawn = tmp_path / "scores.json", tmp_path / "evaluated.smi"
    evaluate = ["evaluate-molecules", "--workdir", str(tmp_path / "run"), "--num", "30", "--batch", "16"]
    evaluate += ["--train-csv", TRAIN, "--test-csv", TEST, "--no-moses", "--no-fcd", "--jobs", "1"]
    assert cli.main([*evaluate, "--samples-out", str(drawn), "--out", str(scores)]) == 0
    result, samples = json.loads(scores.read_text()), drawn.read_text().splitlines()
    assert result["num_samples"] == len(samples) == 30
    assert result["valid"] == pytest.approx(np.mean([chem.canonical(s) is not None for s in samples]))
    constrained = tmp_path / "constrained.smi"
    assert (
        cli.main(
            ["sample-molecules", "--workdir", str(tmp_path / "run"), "--num", "20", "--constrained"]
            + ["--guidance", "1.5", "--out", str(constrained)]
        )
        == 0
    )
    assert all(_grammatical(smiles.tokenize(s)) for s in constrained.read_text().splitlines())
    bad = ["sample-molecules", "--workdir", str(tmp_path / "run"), "--guidance", "-1", "--out", str(constrained)]
    assert cli.main(bad) == 2 and len(constrained.read_text().splitlines()) == 20
    other = apply_overrides(cfg, ["model.latent_dim=5"])
    with pytest.raises(CheckpointError, match="another config"):
        molecules.train(other, data, workdir=tmp_path / "run")
    with Checkpoints(tmp_path / "other", CheckpointConfig(async_save=False)) as other_run:  # a run of another kind
        other_run.save(state, jax.random.key_data(jax.random.key(0)), {"position": {"epoch": 1, "batch": 0}})
    with pytest.raises(ConfigError, match="no molecule run"):
        molecules.load(tmp_path / "other")


@pytest.mark.slow
def test_sequence_model_takes_library_priors_and_refuses_image_ones(tiny):
    model, _, tokens, condition = tiny
    mixture = sequence.build(
        model.decoder.vocab_size,
        model.decoder.length,
        latent_dim=4,
        condition_dim=2,
        embed_dim=8,
        encoder_hidden=16,
        decoder_hidden=24,
        prior=priors.MixtureOfGaussians(latent_dim=4, num_components=3),
    )
    params = jax.jit(mixture.init)(jax.random.key(3), tokens, condition)
    assert "prior" in params["params"]
    key = jax.random.key(9)
    out = jax.jit(sequence.make_terms(mixture))(params, {"tokens": tokens, "condition": condition}, key)
    mean, log_var = mixture.apply(params, tokens, condition, method=mixture.encode)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(jax.random.fold_in(key, 1), mean.shape)
    p = params["params"]["prior"]  # the one-sample KL: log q(z | x) - log p(z), p a 3-component mixture
    log_q = np.sum(-0.5 * ((z - mean) ** 2 / np.exp(log_var) + log_var + np.log(2 * np.pi)), axis=1)
    comps = [
        np.sum(-0.5 * ((z - m) ** 2 / np.exp(v) + v + np.log(2 * np.pi)), axis=1)
        for m, v in zip(p["means"], p["log_vars"])
    ]
    log_p = np.log(np.sum(np.exp(np.stack(comps)) * jax.nn.softmax(p["logits"])[:, None], axis=0))
    np.testing.assert_allclose(out["kl"], log_q - log_p, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="pseudo-inputs"):
        sequence.build(10, 5, prior=priors.VampPrior(latent_dim=4))


class _TaggedPrior(priors.StandardNormal):
    tags: list | None = None  # a list field: the model can no longer be hashed


def test_generation_runs_an_unhashable_model_op_by_op_with_the_same_samples(tiny, moses):
    model, params, _, condition = tiny
    vocab = smiles.build_vocab(moses)
    unhashable = model.clone(prior=_TaggedPrior(latent_dim=4, tags=["mine"]))
    with pytest.raises(TypeError):
        hash(unhashable)
    key = jax.random.key(11)
    expected = molecules.generate(model, params, key, condition, vocab)
    assert molecules.generate(unhashable, params, key, condition, vocab) == expected
    with pytest.raises(ValueError, match="temperature"):
        molecules.generate(model, params, key, condition, vocab, temperature=-1.0)


@pytest.mark.slow
def test_train_molecules_command_trains_resumes_and_refuses_bad_settings(tmp_path, capsys):
    run = str(tmp_path / "run")

    def args(epochs=2, latent=4, workdir=run, *extra):
        return [
            "train-molecules",
            "--train-csv",
            TRAIN,
            "--test-csv",
            TEST,
            "--workdir",
            workdir,
            "--num-train",
            "256",
            "--num-test",
            "64",
            "--epochs",
            str(epochs),
            "--latent-dim",
            str(latent),
            *extra,
        ]

    assert cli.main(args()) == 0
    metrics = tmp_path / "run" / "metrics.jsonl"
    history = [json.loads(line) for line in metrics.read_text().splitlines()]
    tests = _tests(history)
    assert [row["epoch"] for row in tests] == [0, 1, 2]  # like an image run: train and test lines
    assert [row["epoch"] for row in history if row["split"] == "train"] == [1, 2]
    assert tests[-1]["neg_elbo"] < tests[0]["neg_elbo"]  # it learned
    _, _, saved = molecules.load(run, "latest")
    assert saved.names == ("logp", "tpsa", "mw")
    assert cli.main(args()) == 0  # a finished run: resumed, nothing retrained, the same history
    assert [json.loads(line) for line in metrics.read_text().splitlines()] == history
    assert cli.main(args(epochs=3)) == 0  # more epochs: trained on from the saved state
    longer = _tests([json.loads(line) for line in metrics.read_text().splitlines()])
    assert [row["epoch"] for row in longer] == [0, 1, 2, 3] and longer[:3] == tests
    capsys.readouterr()
    assert cli.main(args(epochs=3, latent=5)) == 2  # other settings in the same workdir: refused, by name
    assert "latent_dim: 4 -> 5" in capsys.readouterr().err
    assert cli.main(args(2, 4, str(tmp_path / "other"), "--properties", "logp,colour")) == 2
    assert "colour" in capsys.readouterr().err and not (tmp_path / "other").exists()
    # More devices than the machine has: refused before the molecules are prepared (no header line).
    assert cli.main(args(2, 4, str(tmp_path / "other"), "--devices", "99")) == 2
    err = capsys.readouterr().err
    assert "parallel.num_devices=99 but this process sees only" in err and "training a SMILES" not in err
    assert not (tmp_path / "other").exists()


def _molecule_cli(workdir, epochs: int = 6) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cvae_jax",
        "train-molecules",
        "--train-csv",
        TRAIN,
        "--test-csv",
        TEST,
        "--workdir",
        str(workdir),
        "--num-train",
        "1024",
        "--num-test",
        "128",
        "--epochs",
        str(epochs),
        "--latent-dim",
        "4",
        "--no-progress",
    ]


def _lines(workdir) -> list[dict]:
    timing = ("seconds", "samples_per_s")
    return [
        {k: v for k, v in json.loads(line).items() if k not in timing}
        for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] != "checkpoint"
    ]


@pytest.mark.slow
def test_train_molecules_exits_143_on_sigterm_after_saving_and_resumes_bit_identically(tmp_path):
    from cvae_jax.cli import main

    straight = tmp_path / "straight"  # the uninterrupted run and the resumption in this process; the
    assert main(_molecule_cli(straight, epochs=3)[3:]) == 0  # signal goes to a fresh one
    workdir = tmp_path / "run"
    proc = subprocess.Popen(_molecule_cli(workdir, epochs=3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not any(p.name.isdigit() for p in (workdir / "checkpoints").glob("*")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    with Checkpoints(workdir, read_only=True) as ckpts:
        stopped_at = ckpts.latest_step()
    assert stopped_at is not None and stopped_at < 3 * 8  # 1,024 molecules / 128 = 8 steps per epoch
    assert main(_molecule_cli(workdir, epochs=3)[3:]) == 0
    assert _lines(workdir) == _lines(straight)
    for a, b in zip(
        jax.tree.leaves(molecules.load(straight, "latest")[1]), jax.tree.leaves(molecules.load(workdir, "latest")[1])
    ):
        np.testing.assert_array_equal(a, b)


def test_moses_csv_is_found_without_importing_the_package_or_named_as_missing(tmp_path, monkeypatch):
    package = tmp_path / "moses"
    (package / "dataset" / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('the molsets package must not be imported')\n")
    (package / "dataset" / "data" / "test.csv.gz").write_bytes(Path(TEST).read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path))
    assert smiles.moses_csv("test") == package / "dataset" / "data" / "test.csv.gz"
    assert smiles.load_csv(smiles.moses_csv("test"))[:3] == smiles.load_csv(TEST)[:3]
    with pytest.raises(FileNotFoundError, match="pip install --no-deps molsets"):
        smiles.moses_csv("train")
    with pytest.raises(ValueError, match="split"):
        smiles.moses_csv("validation")


def test_selfies_round_trip_and_every_token_string_decodes_to_a_valid_molecule(moses):
    vocab = smiles.build_vocab([smiles.to_selfies(s) for s in moses[:200]], "selfies")
    texts = [smiles.to_selfies(s) for s in moses[:50]]
    rows = smiles.encode(texts, vocab, 1 + max(len(smiles.tokenize(t, "selfies")) for t in texts))
    decoded = smiles.decode(rows, vocab)  # SELFIES tokens back to SMILES: the same molecules
    assert [chem.canonical(s) for s in decoded] == [chem.canonical(s) for s in moses[:50]]
    # the SELFIES guarantee, which the representation is chosen for: random token rows are molecules
    random_rows = np.random.default_rng(0).integers(smiles.EOS + 1, vocab.size, size=(200, 30))
    assert all(chem.canonical(s) is not None for s in smiles.decode(random_rows, vocab))
    with pytest.raises(ValueError, match="representation"):
        smiles.tokenize("CCO", "inchi")


@pytest.mark.slow
def test_selfies_model_trains_and_draws_only_valid_molecules(tmp_path):
    cfg = molecules.recipe(
        TRAIN,
        TEST,
        num_train=256,
        num_test=64,
        representation="selfies",
        latent_dim=4,
        embed_dim=8,
        encoder_hidden=16,
        decoder_hidden=16,
        train=TrainConfig(epochs=1, batch_size=64, eval_batch_size=64),
    )
    data = molecules.prepare(cfg)
    assert data.vocab.representation == "selfies" and all(t.startswith("[") for t in data.vocab.tokens[3:])
    molecules.train(cfg, data, workdir=tmp_path / "run")
    model, params, saved = molecules.load(tmp_path / "run", "latest")
    assert saved.vocab == data.vocab
    drawn = molecules.generate(model, params, jax.random.key(0), saved.condition_for({}, 64), saved.vocab)
    # every sample is a molecule, unless it decodes to nothing (SELFIES drops branch and ring symbols
    # that have no atom before them: a sample of only those is empty, and MOSES counts "" invalid)
    assert len(drawn) == 64 and any(drawn) and all(chem.canonical(s) is not None for s in drawn if s)
    with pytest.raises(ConfigError, match="representation"):
        apply_overrides(cfg, ["data.representation=inchi"])
    with pytest.raises(ConfigError, match="grammar_features"):
        apply_overrides(cfg, ["model.grammar_features=true"])


@pytest.mark.slow
def test_kekule_representation_writes_the_same_molecules_without_aromatic_atoms(moses, tmp_path):
    assert chem.kekule("c1ccccc1O") == "OC1=CC=CC=C1" and chem.kekule("C1=CC=C1N(") is None
    cfg = molecules.recipe(
        TRAIN,
        TEST,
        num_train=256,
        num_test=64,
        representation="kekule",
        grammar_features=True,
        latent_dim=4,
        embed_dim=8,
        encoder_hidden=16,
        decoder_hidden=16,
        train=TrainConfig(epochs=1, batch_size=64, eval_batch_size=64),
    )
    data = molecules.prepare(cfg, cached=False)
    table = grammar.syntax(data.vocab)
    atoms = [t for t, k in zip(data.vocab.tokens, table["kind"]) if k == grammar.ATOM]
    assert "C" in atoms and not any(t.strip("[]")[:1].islower() for t in atoms)  # no aromatic atom
    assert (table["capacity"][table["kind"] == grammar.ATOM] < grammar.UNCHECKED).all()  # every valence checked
    decoded = smiles.decode(data.train["tokens"], data.vocab)
    assert [chem.canonical(s) for s in decoded] == [chem.canonical(s) for s in data.train_smiles]
    molecules.train(cfg, data, workdir=tmp_path / "run")
    model, params, saved = molecules.load(tmp_path / "run", "latest")
    assert saved.vocab == data.vocab and saved.vocab.representation == "kekule"
    drawn = molecules.generate(
        model, params, jax.random.key(0), saved.condition_for({}, 64), saved.vocab, constrained=True
    )
    assert len(drawn) == 64 and all(_grammatical(smiles.tokenize(s)) for s in drawn)


@pytest.mark.slow
def test_validation_molecules_follow_the_training_ones_choose_best_and_leave_training_alone(tmp_path, capsys):
    """Validation: the training file's molecules after the first num_train (where the file ends there,
    its last 10%, which training then leaves out). The trainer scores them every epoch, "best" is the
    epoch of the lowest validation -ELBO, and they change nothing in training. A run without them has
    no "best": sample-molecules (whose default is best) exits with an error naming --num-validation."""
    rows = smiles.load_csv(TRAIN)
    kwargs = dict(num_test=64, latent_dim=4, embed_dim=8, encoder_hidden=16, decoder_hidden=16)
    train = TrainConfig(epochs=3, batch_size=64, eval_batch_size=64)
    cfg = molecules.recipe(TRAIN, TEST, num_train=256, num_validation=100, train=train, **kwargs)
    data = molecules.prepare(cfg, cached=False)
    assert data.train_smiles == rows[:256]
    assert len(data.validation_smiles) > 80 and set(data.validation_smiles) <= set(rows[256:356])
    assert data.validation["tokens"].shape == (len(data.validation_smiles), data.length)
    np.testing.assert_allclose(  # in the training set's units
        data.validation["condition"], (data.validation["properties"] - data.mean) / data.std, rtol=1e-4, atol=1e-5
    )
    whole = molecules.prepare(
        apply_overrides(cfg, [f"data.num_train={len(rows)}", "data.num_validation=500"]), cached=False
    )
    assert whole.train_smiles == rows[: len(rows) - len(rows) // 10]  # the last 10% held out
    assert set(whole.validation_smiles) <= set(rows[len(rows) - len(rows) // 10 :])

    _, state, history = molecules.train(cfg, data, workdir=tmp_path / "run")
    held = [e for e in history if e["split"] == "validation"]
    assert [e["epoch"] for e in held] == [0, 1, 2, 3]
    with Checkpoints(tmp_path / "run", read_only=True) as ckpts:
        assert ckpts.best_step() == min(held[1:], key=lambda e: e["neg_elbo"])["step"]
    bare = apply_overrides(cfg, ["data.num_validation=0"])
    _, plain, plain_history = molecules.train(bare, molecules.prepare(bare, cached=False), workdir=tmp_path / "bare")
    out = tmp_path / "drawn.smi"
    capsys.readouterr()
    assert cli.main(["sample-molecules", "--workdir", str(tmp_path / "bare"), "--num", "3", "--out", str(out)]) == 2
    assert "no 'best' checkpoint" in capsys.readouterr().err and not out.exists()
    assert (
        cli.main(
            ["sample-molecules", "--workdir", str(tmp_path / "bare"), "--checkpoint", "latest"]
            + ["--num", "3", "--out", str(out)]
        )
        == 0
    )
    assert len(out.read_text().splitlines()) == 3
    assert _tests(plain_history) == _tests(history)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(plain.params)):
        np.testing.assert_array_equal(a, b)
    # A run saved by an earlier version: data and model fields at the top level, and (before validation
    # existed) no num_validation, which means nothing was held out.
    now = cfg.to_dict()
    legacy = {**{k: v for k, v in now.items() if k not in ("data", "model")}, **now["data"], **now["model"]}
    del legacy["num_validation"]
    restored = molecules.MoleculeConfig.from_dict(json.loads(json.dumps(legacy)))
    assert restored == apply_overrides(cfg, ["data.num_validation=0"])
    with pytest.raises(ConfigError, match="num_validation"):
        apply_overrides(cfg, ["data.num_validation=-1"])


@pytest.mark.slow
def test_prepared_data_are_cached_and_read_back_identically(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAE_JAX_CACHE", str(tmp_path / "cache"))
    cfg = molecules.recipe(TRAIN, TEST, num_train=200, num_test=50, train=TrainConfig(batch_size=64))
    fresh = molecules.prepare(cfg, cached=False)
    first, second = molecules.prepare(cfg), molecules.prepare(cfg)  # computed and written, then read back
    assert len(list((tmp_path / "cache" / "molecules").iterdir())) == 1
    for data in (first, second):
        assert data.vocab == fresh.vocab and data.length == fresh.length and data.names == fresh.names
        assert data.train_smiles == fresh.train_smiles and data.test_smiles == fresh.test_smiles
        assert data.validation_smiles == fresh.validation_smiles and len(fresh.validation_smiles) > 500
        for split in ("train", "test", "validation"):
            for k, v in getattr(fresh, split).items():
                np.testing.assert_array_equal(getattr(data, split)[k], v)
        np.testing.assert_array_equal(data.mean, fresh.mean)
    other = apply_overrides(cfg, ["data.num_train=150"])  # other settings: another entry
    assert len(molecules.prepare(other).train_smiles) == 150
    assert len(list((tmp_path / "cache" / "molecules").iterdir())) == 2


@pytest.mark.slow
def test_train_task_molecules_and_train_molecules_write_the_same_config(tmp_path, capsys):
    """One config for both commands: train-molecules' flags are names for the fields `--set` reaches."""
    sizes = ["data.num_train=256", "data.num_test=64", "model.latent_dim=4", "model.embed_dim=8"]
    sizes += ["model.encoder_hidden=16", "model.decoder_hidden=16", "train.batch_size=64", "train.epochs=1"]
    by_task = tmp_path / "task"
    common = ["--set", f"data.train_path={TRAIN}", "--set", f"data.test_path={TEST}", "--no-progress"]
    assert (
        cli.main(
            ["train", "--task", "molecules", "--workdir", str(by_task), "--set", "model.decoder_layers=2", *common]
            + [arg for item in sizes for arg in ("--set", item)]
        )
        == 0
    )
    by_flags = tmp_path / "flags"
    flags = ["train-molecules", "--train-csv", TRAIN, "--test-csv", TEST, "--workdir", str(by_flags)]
    flags += ["--decoder-layers", "2", "--num-train", "256", "--num-test", "64", "--latent-dim", "4", "--epochs", "1"]
    flags += ["--decoder-hidden", "16", "--no-progress", "--set", "model.embed_dim=8"]
    flags += ["--set", "model.encoder_hidden=16", "--set", "train.batch_size=64"]
    assert cli.main(flags) == 0
    written = json.loads((by_task / "config.json").read_text())
    assert written == json.loads((by_flags / "config.json").read_text())
    assert written["model"]["decoder_layers"] == 2
    # the KL warm-up follows the data: 2 epochs of 256 molecules in batches of 64
    assert written["train"]["warmup_steps"] == 8
    assert _lines(by_task) == _lines(by_flags)
    # resuming by task with no settings reads the saved config (nothing retrained)
    assert cli.main(["train", "--task", "molecules", "--workdir", str(by_task), "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--task", "molecules", "--model", "vae", "--workdir", str(tmp_path / "x")]) == 2
    assert "--model is for --task images" in capsys.readouterr().err
    assert cli.main(["train", "--task", "molecules", "--preset", "nope", "--workdir", str(tmp_path / "x")]) == 2
    assert "presets" in capsys.readouterr().err and not (tmp_path / "x").exists()
