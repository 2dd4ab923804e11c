"""SeqIO postprocessors: decoded model text -> the cleaned string each metric family scores.

SeqIO calls `postprocess_fn(output, example=..., is_target=...)`. SMILES outputs keep their raw
spelling (BLEU and Levenshtein score the string; molecules are compared by canonical form inside the
metrics), losing only surrounding whitespace, leftover special tokens and ChEBI's doubled backslashes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from textchem_jax.chem.smiles import unescape_backslashes
from textchem_jax.metrics._inputs import as_text

_SPECIAL_TOKENS = re.compile(r"</s>|<pad>|<s>")
_SPACES = re.compile(r"\s+")


def _clean(output: object) -> str:
    return _SPACES.sub(" ", _SPECIAL_TOKENS.sub(" ", as_text(output))).strip()


def smiles_postprocessor(output: object, example: Mapping | None = None, is_target: bool = False) -> str:
    """A SMILES (or precursor set) as decoded: no whitespace inside, single backslashes."""
    return unescape_backslashes(_clean(output).replace(" ", ""))


# How an unknown piece comes out of decoding: "<unk>" from Hugging Face tokenizers, " ⁇ " from SentencePiece.
_UNKNOWN = re.compile(r"\s*(?:<unk>|\u2047)\s*")


def gt4sd_smiles_postprocessor(output: object, example: Mapping | None = None, is_target: bool = False) -> str:
    """A SMILES from a GT4SD Text+Chem T5 checkpoint, read as its authors did: T5's vocabulary has no `\\`,
    so their models write `<unk>` for it, which GT4SD turns back into `\\` before scoring."""
    return smiles_postprocessor(_UNKNOWN.sub(lambda _: "\\", as_text(output)))


def text_postprocessor(output: object, example: Mapping | None = None, is_target: bool = False) -> str:
    """A caption or action sequence: special tokens dropped, whitespace collapsed."""
    return _clean(output)


def retro_postprocessor(output: object, example: Mapping | None = None, is_target: bool = False):
    """Precursors; a target also carries its product (from the example) for round-trip accuracy."""
    precursors = smiles_postprocessor(output)
    if is_target and example is not None and "product" in example:
        return {"target": precursors, "product": smiles_postprocessor(example["product"])}
    return precursors
