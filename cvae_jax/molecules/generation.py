"""Drawing from a trained molecule model: molecules for requested properties (optionally
grammar-constrained or guided), greedy reconstructions, and how closely a property follows its request."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cvae_jax.apps import inference
from cvae_jax.data import smiles
from cvae_jax.molecules import chem, grammar
from cvae_jax.molecules.dataset import MoleculeData


@inference.compiled_per_model(5, 7)
def _generate_tokens(model, params, z, condition, key, temperature: float, syntax=None, guidance: float = 0.0):
    """Token rows [N, L] from latents z; compiled once per model, temperature, guidance and shape."""
    return model.apply(params, z, condition, key, temperature, syntax, guidance, method=model.generate)


def generate(
    model,
    params,
    key,
    condition: np.ndarray | None,
    vocab: smiles.Vocab,
    num: int | None = None,
    temperature: float = 1.0,
    constrained: bool = False,
    guidance: float = 0.0,
    batch: int | None = None,
) -> list[str]:
    """SMILES drawn from p(x | z, c), z ~ p(z | c): one per condition row (or `num`, unconditional).
    `batch`: at most that many rows per compiled call (bounded memory whatever the count), the rows
    from `start` on drawn with key fold_in(key, start).
    `constrained`: SMILES-syntax-constrained sampling (`cvae_jax.molecules.grammar`): every string
    is grammatical SMILES within the atoms' valences, though RDKit may still refuse an aromatic ring
    (the "kekule" representation has none) or a rare row the valences cornered; no effect
    on SELFIES. `guidance` w >= 0: each step's logits l(c) + w (l(c) - l(mean properties)), see
    `cvae_jax.molecules.model.SmilesDecoder.generate`; no effect on an unconditional model."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not guidance >= 0:
        raise ValueError(f"guidance must be >= 0 (0 = none), got {guidance}")
    if condition is not None:
        condition = jnp.asarray(condition, jnp.float32)
        num = condition.shape[0]
    if not num or num < 1:
        raise ValueError(f"the number of molecules to draw must be a positive integer, got {num}")
    if batch is not None:
        kwargs = dict(temperature=temperature, constrained=constrained, guidance=guidance)
        return [
            smi
            for start in range(0, num, batch)
            for smi in generate(
                model,
                params,
                jax.random.fold_in(key, start),
                None if condition is None else condition[start : start + batch],
                vocab,
                min(batch, num - start),
                **kwargs,
            )
        ]
    z = model.apply(params, jax.random.fold_in(key, 0), num, condition, method=model.prior_sample)
    syntax = grammar.syntax(vocab) if constrained else None
    tokens = _generate_tokens(
        model, params, z, condition, jax.random.fold_in(key, 1), float(temperature), syntax, float(guidance)
    )
    return smiles.decode(np.asarray(tokens), vocab)


def reconstruction(model, params, arrays: dict[str, np.ndarray], vocab: smiles.Vocab) -> dict[str, float]:
    """Greedy decoding of each molecule's posterior mean: the share decoded exactly, and per token."""
    condition = jnp.asarray(arrays["condition"]) if model.conditional else None
    mean, _ = model.apply(params, jnp.asarray(arrays["tokens"]), condition, method=model.encode)
    out = np.asarray(_generate_tokens(model, params, mean, condition, jax.random.key(0), 0.0, None, 0.0))
    tokens = arrays["tokens"]
    scored = tokens != smiles.PAD
    exact = [a == b for a, b in zip(smiles.decode(out, vocab), smiles.decode(tokens, vocab))]
    return {"exact": float(np.mean(exact)), "token_accuracy": float(np.sum((out == tokens) & scored) / np.sum(scored))}


def property_control(
    model,
    params,
    data: MoleculeData,
    key,
    name: str,
    targets: Sequence[float],
    num: int = 500,
    temperature: float = 1.0,
) -> list[dict]:
    """For each target value of property `name` (others at the training median): `num` molecules
    drawn under that condition, their validity, and the property measured by RDKit on the valid ones."""
    col = data.names.index(name)
    rows = []
    for i, target in enumerate(targets):
        smi = generate(
            model,
            params,
            jax.random.fold_in(key, i),
            data.condition_for({name: target}, num),
            data.vocab,
            temperature=temperature,
        )
        values = chem.properties(smi, data.names)[:, col]
        valid = values[~np.isnan(values)]
        rows.append(
            {
                "property": name,
                "target": float(target),
                "validity": float(len(valid) / num),
                "mean": float(np.mean(valid)) if len(valid) else float("nan"),
                "std": float(np.std(valid)) if len(valid) else float("nan"),
                "mae": float(np.mean(np.abs(valid - target))) if len(valid) else float("nan"),
            }
        )
    return rows
