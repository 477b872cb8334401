"""A (conditional) VAE over token sequences, e.g. SMILES strings (Gomez-Bombarelli et al. 2018 with a
GRU decoder fed the previous token, as in Bowman et al. 2016 and Lim et al. 2018's molecular CVAE).

  encoder: embed tokens -> GRU (stops at each row's end token) -> [final state, c] -> (mean, log_var)
  decoder: h0 = tanh([z, c] W0); GRU over the previous tokens, [z, c] added to every step's gates
           (and, optionally, the SMILES grammar's state after the previous tokens)
           -> logits over the vocabulary at every position
  p(x | z, c) = prod_t Categorical(x_t | x_<t, z, c), over the tokens up to and including EOS.

Batches are {"tokens": int32 [B, L], "condition": float32 [B, C]} (see cvae_jax.data.smiles). The prior is
any `cvae_jax.core.priors.Prior` that does not need an image encoder (standard normal by default), so
the KL, its schedules and free bits are those of the image models.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvae_jax.config import ConfigError
from cvae_jax.core import distributions as D
from cvae_jax.core import objectives, priors
from cvae_jax.core.models import VAE
from cvae_jax.data.smiles import BOS, EOS, PAD
from cvae_jax.molecules import grammar
from cvae_jax.nn import recurrent


class SmilesEncoder(nn.Module):
    vocab_size: int
    latent_dim: int
    embed_dim: int = 64
    hidden: int = 256

    @nn.compact
    def __call__(self, tokens: jax.Array, condition: jax.Array | None = None):
        length = jnp.sum(tokens != PAD, axis=1)
        gates = nn.Dense(3 * self.hidden, name="input")(nn.Embed(self.vocab_size, self.embed_dim)(tokens))
        w_h, b_hn = recurrent.Recurrent(self.hidden, name="recurrent")()
        h0 = jnp.zeros((tokens.shape[0], self.hidden), gates.dtype)
        _, h = recurrent.run(gates, h0, w_h, b_hn, length)
        if condition is not None:
            h = jnp.concatenate([h, condition.astype(h.dtype)], axis=-1)
        return nn.Dense(self.latent_dim, name="mean")(h), nn.Dense(self.latent_dim, name="log_var")(h)


class SmilesDecoder(nn.Module):
    vocab_size: int
    length: int  # tokens per sequence, the EOS included
    embed_dim: int = 64
    hidden: int = 512
    word_dropout: float = 0.0  # training only: share of previous tokens hidden from the decoder (Bowman et al.)
    layers: int = 1  # stacked GRUs; each above the first reads the states of the one below
    # The vocabulary's grammar table (`cvae_jax.molecules.grammar.syntax` as a tuple of (name,
    # values) pairs, hashable): when given, every step's gates also read the grammar's state
    # (`grammar.features`: open branches and rings, the current atom's free valence).
    grammar_table: tuple | None = None

    def setup(self):
        self.embed = nn.Embed(self.vocab_size, self.embed_dim)
        self.input = nn.Dense(3 * self.hidden)
        self.context = nn.Dense(3 * self.hidden, use_bias=False)
        self.initial = nn.Dense(self.hidden)
        self.recurrent = recurrent.Recurrent(self.hidden)
        # Layers 2..n: their input projections (of the states below), context gates, initial states, GRUs.
        upper = range(1, self.layers)
        self.upper_input = [nn.Dense(3 * self.hidden) for _ in upper]
        self.upper_context = [nn.Dense(3 * self.hidden, use_bias=False) for _ in upper]
        self.upper_initial = [nn.Dense(self.hidden) for _ in upper]
        self.upper_recurrent = [recurrent.Recurrent(self.hidden) for _ in upper]
        if self.grammar_table is not None:
            self.structure = nn.Dense(3 * self.hidden, use_bias=False)
        self.out_kernel = self.param("out_kernel", nn.initializers.lecun_normal(), (self.hidden, self.vocab_size))
        self.out_bias = self.param("out_bias", nn.initializers.zeros, (self.vocab_size,))

    def _start(self, z, condition):
        context = z if condition is None else jnp.concatenate([z, condition.astype(z.dtype)], axis=-1)
        # Every token's input gates, as one [vocab, 3H] table: a gather per step instead of a product.
        table = self.input(self.embed.embedding)
        return table, self.context(context), jnp.tanh(self.initial(context))

    def _table(self) -> dict:
        return {name: jnp.asarray(values, jnp.int32) for name, values in self.grammar_table}

    def _upper_start(self, z, condition):
        """(context gates, initial state) of each layer above the first."""
        context = z if condition is None else jnp.concatenate([z, condition.astype(z.dtype)], axis=-1)
        return [(c(context), jnp.tanh(i(context))) for c, i in zip(self.upper_context, self.upper_initial)]

    def __call__(
        self, z: jax.Array, condition: jax.Array | None, tokens: jax.Array, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        """Teacher forcing: logits [B, L, vocab] of every position given the tokens before it. With a
        `dropout_key` and word_dropout > 0, that share of the previous tokens (never BOS) is replaced
        by PAD, so the decoder must take more from z: a cure for posterior collapse."""
        table, context_gates, h0 = self._start(z, condition)
        previous = jnp.concatenate([jnp.full((tokens.shape[0], 1), BOS, tokens.dtype), tokens[:, :-1]], axis=1)
        if dropout_key is not None and self.word_dropout > 0:
            hide = jax.random.bernoulli(dropout_key, self.word_dropout, previous.shape).at[:, 0].set(False)
            previous = jnp.where(hide, PAD, previous)
        gates = table[previous] + context_gates[:, None]
        if self.grammar_table is not None:  # the state after the true previous tokens
            gates = gates + self.structure(grammar.replay(tokens, self._table()))
        w_h, b_hn = self.recurrent()
        states, _ = recurrent.run(gates, h0, w_h, b_hn)
        for i, (gates, start) in enumerate(self._upper_start(z, condition)):
            w_h, b_hn = self.upper_recurrent[i]()
            states, _ = recurrent.run(self.upper_input[i](states) + gates[:, None], start, w_h, b_hn)
        return states @ self.out_kernel + self.out_bias

    def generate(
        self,
        z: jax.Array,
        condition: jax.Array | None,
        key: jax.Array,
        temperature: float = 1.0,
        syntax: dict | None = None,
        guidance: float = 0.0,
    ):
        """Token rows [B, L] drawn one token at a time (greedy when temperature == 0); after EOS: PAD.
        With `syntax` (`cvae_jax.molecules.grammar.syntax(vocab)`), each draw is restricted to the tokens
        that keep the string grammatical SMILES within the atoms' valences and let it end within L
        tokens: the distribution renormalized over those.

        `guidance` w > 0 (conditional models): every step's logits are l(c) + w (l(c) - l(0)), the
        decoder run twice on the same tokens, once under the condition and once under 0, the training
        set's mean properties (the condition is standardized): classifier-free guidance (Ho & Salimans
        2022) with the average molecule as the contrast, which moves the samples' properties towards
        the ones asked for where the decoder follows them only part of the way."""
        rows = z.shape[0]
        guided = guidance > 0 and condition is not None
        twice = (lambda a: jnp.concatenate([a, a])) if guided else (lambda a: a)
        if guided:
            z, condition = twice(z), jnp.concatenate([condition, jnp.zeros_like(condition)])
        table, context_gates, h0 = self._start(z, condition)
        upper = self._upper_start(z, condition)
        cells = [self.recurrent(), *(r() for r in self.upper_recurrent)]

        tracked = syntax if syntax is not None else (self._table() if self.grammar_table is not None else None)

        def body(carry, t):
            hs, previous, done, state = carry
            gates = table[twice(previous)] + context_gates
            if self.grammar_table is not None:
                gates = gates + self.structure(twice(grammar.features(state)))
            h = recurrent.update(gates, hs[0], *cells[0])
            new = [h]
            for i, (gates, _) in enumerate(upper):
                h = recurrent.update(self.upper_input[i](h) + gates, hs[i + 1], *cells[i + 1])
                new.append(h)
            hs = tuple(new)
            logits = h @ self.out_kernel + self.out_bias
            if guided:
                asked, contrast = logits[:rows], logits[rows:]
                logits = asked + guidance * (asked - contrast)
            if syntax is not None:
                logits = jnp.where(grammar.allowed(state, syntax, self.length - t - 1), logits, -jnp.inf)
            if temperature == 0:
                token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
            else:
                token = jax.random.categorical(jax.random.fold_in(key, t), logits / temperature).astype(jnp.int32)
            token = jnp.where(done, PAD, token)
            if tracked is not None:
                state = grammar.advance(state, tracked, token)
            return (hs, token, done | (token == EOS), state), token

        states = (h0, *(start for _, start in upper))
        start = (states, jnp.full((rows,), BOS, jnp.int32), jnp.zeros((rows,), bool), grammar.start(rows))
        _, tokens = jax.lax.scan(body, start, jnp.arange(self.length))
        return tokens.T


class SmilesVAE(VAE):
    """VAE (condition_dim = 0) or CVAE over token sequences; prior, KL and sampling as in `VAE`."""

    @property
    def conditional(self) -> bool:
        return self.condition_dim > 0

    def encode(self, tokens: jax.Array, condition: jax.Array | None = None):
        if tokens.ndim != 2 or tokens.shape[1] != self.decoder.length or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(
                f"tokens must be integers of shape [N, {self.decoder.length}] for this model, got "
                f"{tokens.dtype} {tuple(tokens.shape)} (see cvae_jax.data.smiles.encode)"
            )
        self._check(condition, tokens.shape[0])
        return self.encoder(tokens, condition)

    def decode(
        self,
        z: jax.Array,
        condition: jax.Array | None = None,
        tokens: jax.Array | None = None,
        dropout_key: jax.Array | None = None,
    ):
        if tokens is None:
            raise ValueError(
                "a sequence decoder scores tokens given the ones before them: pass tokens=, "
                "or use generate() to draw new sequences"
            )
        self._check(condition, z.shape[0])
        return {"token_logits": self.decoder(z, condition, tokens, dropout_key)}

    def generate(
        self,
        z: jax.Array,
        condition: jax.Array | None,
        key: jax.Array,
        temperature: float = 1.0,
        syntax=None,
        guidance: float = 0.0,
    ):
        self._check(condition, z.shape[0])
        return self.decoder.generate(z, condition, key, temperature, syntax, guidance)

    def __call__(self, tokens: jax.Array, condition: jax.Array | None = None):
        mean, _ = self.encode(tokens, condition)
        self.prior_log_prob(mean, condition)
        return self.decode(mean, condition, tokens)


def build(
    vocab_size: int,
    length: int,
    *,
    latent_dim: int = 32,
    condition_dim: int = 0,
    embed_dim: int = 64,
    encoder_hidden: int = 256,
    decoder_hidden: int = 512,
    word_dropout: float = 0.0,
    decoder_layers: int = 1,
    prior: priors.Prior | None = None,
    grammar_table: dict | None = None,
) -> SmilesVAE:
    """`grammar_table` (`cvae_jax.molecules.grammar.syntax(vocab)`): the decoder also reads the grammar's
    state at every step (open branches and rings, the current atom's free valence)."""
    if prior is not None and prior.needs_encoder:
        raise ConfigError(
            f"{type(prior).__name__} needs the encoder's image pseudo-inputs; a sequence model takes "
            "priors of z alone (standard normal, learned Gaussian, mixture, flow, or your own)"
        )
    return SmilesVAE(
        encoder=SmilesEncoder(vocab_size, latent_dim, embed_dim, encoder_hidden),
        decoder=SmilesDecoder(
            vocab_size,
            length,
            embed_dim,
            decoder_hidden,
            word_dropout,
            decoder_layers,
            None if grammar_table is None else tuple((k, tuple(v.tolist())) for k, v in grammar_table.items()),
        ),
        prior=prior if prior is not None else priors.StandardNormal(latent_dim),
        condition_dim=condition_dim,
    )


def token_log_likelihood(tokens: jax.Array, logits: jax.Array) -> jax.Array:
    """log p(tokens | logits) per row [B]: summed over the positions before PAD (the EOS included)."""
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), tokens[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(tokens != PAD, log_p, 0.0), axis=1)


WORD_DROPOUT = 3  # key purpose inside a step, after objectives' BINARIZE, LATENT, PRIOR_LATENT


def make_terms(model: SmilesVAE, *, training: bool = False) -> Callable:
    """terms(params, batch, key) -> {"recon", "kl", "neg_elbo"} [B] (+ "kl_per_dim" for N(0, I)), in nats
    per sequence, with one reparameterized z ~ q(z | x, c): the same conventions as the image models.
    `training` applies the decoder's word dropout (the loss); evaluation scores the model without it."""

    def terms(params, batch, key):
        tokens = batch["tokens"]
        condition = batch["condition"].astype(jnp.float32) if model.conditional else None
        mean, log_var = model.apply(params, tokens, condition, method=model.encode)
        z = D.sample_diag_gaussian(jax.random.fold_in(key, objectives.LATENT), mean, log_var)
        dropout_key = jax.random.fold_in(key, WORD_DROPOUT) if training else None
        logits = model.apply(params, z, condition, tokens, dropout_key, method=model.decode)["token_logits"]
        recon = -token_log_likelihood(tokens, logits)
        kl = model.apply(params, mean, log_var, z, condition, method=model.kl_to_prior)
        return objectives.elbo_terms(model, recon, kl, mean, log_var)

    return terms
