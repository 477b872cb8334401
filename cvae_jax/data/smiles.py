"""Molecules as token sequences: tokenizer, vocabulary, padded integer arrays, MOSES files.

Three string representations. SMILES tokens are atoms and bonds as chemists write them (Schwaller et
al. 2019's regular expression): bracket atoms such as `[nH]` or `[C@@H]`, two-letter `Br` / `Cl`,
ring-closure digits, `%nn`. Kekulé SMILES ("kekule") are SMILES with aromatic rings written as
alternating single and double bonds between upper-case atoms: no aromatic atom, whose ring a model
would have to get right as a whole, and every bond order explicit, so a sampler can count valences
(`cvae_jax.molecules.grammar`). SELFIES (Krenn et al. 2020, the `selfies` package) are bracketed
symbols such as `[C]`, `[=O]`, `[Branch1]`, `[Ring1]`; every string of them decodes to a valid
molecule, so a SELFIES model cannot draw an unparsable sample. A vocabulary knows its representation;
`decode` always returns SMILES.
A sequence array is int32 [N, L]: the tokens, then one EOS, then PAD up to L. The decoder reads
BOS followed by the same row shifted right, so BOS never appears in the array.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import re
import typing
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

PAD, BOS, EOS = 0, 1, 2
SPECIAL = ("<pad>", "<bos>", "<eos>")
_TOKEN = re.compile(
    r"(\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|%[0-9]{2}|[0-9])"
)


# The strings a molecule model reads and writes; the config field's type (one list of choices).
Representation = typing.Literal["smiles", "kekule", "selfies"]
REPRESENTATIONS = typing.get_args(Representation)


def _selfies():
    try:
        import selfies
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('the SELFIES representation needs the selfies package: pip install -e ".[chem]"') from e
    return selfies


def to_selfies(smiles: str) -> str | None:
    """The SELFIES string of a SMILES string, or None when it cannot be translated."""
    sf = _selfies()
    try:
        return sf.encoder(smiles)
    except sf.EncoderError:
        return None


def from_selfies(text: str) -> str:
    """The SMILES string of a SELFIES string ("" when it does not decode)."""
    sf = _selfies()
    try:
        return sf.decoder(text) or ""
    except sf.DecoderError:
        return ""


def tokenize(smiles: str, representation: str = "smiles") -> list[str]:
    """The tokens of one SMILES (or SELFIES) string; raises ValueError on characters no token covers."""
    if representation == "selfies":
        tokens = list(_selfies().split_selfies(smiles))
        if "".join(tokens) != smiles:
            raise ValueError(f"SELFIES {smiles!r} is not a sequence of bracketed symbols")
        return tokens
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")
    tokens = _TOKEN.findall(smiles)
    if "".join(tokens) != smiles:
        covered = 0
        for token in tokens:  # findall skips what it cannot match: find the first gap
            if smiles.startswith(token, covered):
                covered += len(token)
            else:
                break
        raise ValueError(
            f"SMILES {smiles!r} has a character no token covers at position {covered} "
            f"({smiles[covered : covered + 5]!r}...)"
        )
    return tokens


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Token <-> id. Ids 0, 1, 2 are PAD, BOS, EOS; the rest are sorted tokens of `representation`."""

    tokens: tuple[str, ...]
    representation: str = "smiles"

    @property
    def size(self) -> int:
        return len(self.tokens)

    def ids(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def to_json(self) -> str:
        return json.dumps(list(self.tokens))

    @classmethod
    def from_json(cls, text: str) -> "Vocab":
        tokens = tuple(json.loads(text))
        if tokens[:3] != SPECIAL:
            raise ValueError(f"not a SMILES vocabulary: it must start with {SPECIAL}, got {tokens[:3]}")
        return cls(tokens)


def build_vocab(smiles: Iterable[str], representation: str = "smiles") -> Vocab:
    seen = set()
    for s in smiles:
        seen.update(tokenize(s, representation))
    return Vocab(SPECIAL + tuple(sorted(seen)), representation)


def encode(smiles: Sequence[str], vocab: Vocab, length: int) -> np.ndarray:
    """int32 [N, length]: tokens, EOS, PAD (strings of the vocabulary's representation). Raises
    ValueError for a string longer than length - 1 tokens or with a token outside the vocabulary."""
    ids = vocab.ids()
    out = np.full((len(smiles), length), PAD, np.int32)
    for row, s in enumerate(smiles):
        tokens = tokenize(s, vocab.representation)
        if len(tokens) >= length:
            raise ValueError(
                f"SMILES {s!r} has {len(tokens)} tokens; sequences of length {length} hold at most "
                f"{length - 1} (one place is the end token): raise the length or filter the data"
            )
        unknown = [t for t in tokens if t not in ids]
        if unknown:
            raise ValueError(f"SMILES {s!r} has tokens outside the vocabulary: {unknown}")
        out[row, : len(tokens)] = [ids[t] for t in tokens]
        out[row, len(tokens)] = EOS
    return out


def decode(rows: np.ndarray, vocab: Vocab) -> list[str]:
    """SMILES strings of int rows [N, L]: the tokens before the first EOS (PAD and BOS skipped),
    translated from SELFIES when that is the vocabulary's representation."""
    out = []
    for row in np.asarray(rows):
        text = []
        for i in row:
            if i == EOS:
                break
            if i > EOS:
                text.append(vocab.tokens[i])
        out.append("".join(text))
    return [from_selfies(t) for t in out] if vocab.representation == "selfies" else out


def lengths(rows: np.ndarray) -> np.ndarray:
    """Tokens per row including the EOS (the positions the likelihood scores)."""
    return np.sum(np.asarray(rows) != PAD, axis=1)


MOSES_SPLITS = ("train", "test", "test_scaffolds")


def moses_csv(split: str = "train") -> Path:
    """The MOSES CSV of `split` ("train": 1.58M molecules, "test", "test_scaffolds") that the molsets
    wheel ships, found without importing its package (`pip install --no-deps molsets`: its declared
    dependencies do not install on current Python)."""
    import importlib.util

    if split not in MOSES_SPLITS:
        raise ValueError(f"MOSES split must be one of {MOSES_SPLITS}, got {split!r}")
    spec = importlib.util.find_spec("moses")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "dataset" / "data" / f"{split}.csv.gz"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"MOSES's {split}.csv.gz was not found: install the molsets wheel with "
        "`pip install --no-deps molsets`, or give the CSV files' paths"
    )


def load_csv(path: str | Path, limit: int | None = None, column: str = "SMILES") -> list[str]:
    """The `column` of a (gzipped) CSV with a header line, e.g. MOSES's train/test files; the first
    `limit` rows when given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no SMILES file at {path}: give a CSV (or .csv.gz) with a {column!r} column, "
            "e.g. MOSES's train.csv.gz (see cvae_jax.data.smiles.moses_csv)"
        )
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise ValueError(f"{path} has no {column!r} column (its header: {reader.fieldnames})")
            out = []
            for row in reader:
                if limit is not None and len(out) >= limit:
                    break
                out.append(row[column].strip())
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} could not be read as a (gzipped) CSV file: {e}") from e
    return out
