"""SeqIO postprocessors: decoded model text -> the cleaned string each metric family scores.

SeqIO calls `postprocess_fn(output, example=..., is_target=...)`; with top-k decoding `output` is a list
of beams (best first), and each postprocessor cleans every beam. SMILES outputs keep their raw
spelling (BLEU and Levenshtein score the string; molecules are compared by canonical form inside the
metrics), losing only surrounding whitespace, leftover special tokens and ChEBI's doubled backslashes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping

from textchem_jax.chem.smiles import unescape_backslashes
from textchem_jax.metrics._inputs import as_text, is_beams

_SPECIAL_TOKENS = re.compile(r"</s>|<pad>|<s>")
_SPACES = re.compile(r"\s+")


def _each_beam(postprocess: Callable) -> Callable:
    """A postprocessor that also takes a list of beams (SeqIO's top-k predictions) and cleans each."""

    @functools.wraps(postprocess)
    def wrapped(output: object, example: Mapping | None = None, is_target: bool = False):
        if is_beams(output):
            return [postprocess(beam, example, is_target) for beam in output]
        return postprocess(output, example, is_target)

    return wrapped


def _clean(output: object) -> str:
    return _SPACES.sub(" ", _SPECIAL_TOKENS.sub(" ", as_text(output))).strip()


@_each_beam
def smiles_postprocessor(output: object, example: Mapping | None = None, is_target: bool = False) -> str:
    """A SMILES (or precursor set) as decoded: no whitespace inside, single backslashes."""
    return unescape_backslashes(_clean(output).replace(" ", ""))


# How an unknown piece comes out of decoding: "<unk>" from Hugging Face tokenizers, " ⁇ " from SentencePiece.
_UNKNOWN = re.compile(r"\s*(?:<unk>|\u2047)\s*")


def _unknown_as_backslash(postprocess: Callable, output: object, example: Mapping | None = None, is_target: bool = False):
    return postprocess(_UNKNOWN.sub(lambda _: "\\", as_text(output)), example, is_target)


def gt4sd_compatible(postprocess: Callable) -> Callable:
    """`postprocess` reading output as GT4SD reads its Text+Chem T5 checkpoints: T5's vocabulary has no `\\`,
    so those models write `<unk>` for it, which GT4SD turns back into `\\` before scoring."""
    return functools.wraps(postprocess)(_each_beam(functools.partial(_unknown_as_backslash, postprocess)))


gt4sd_smiles_postprocessor = gt4sd_compatible(smiles_postprocessor)
gt4sd_smiles_postprocessor.__doc__ = gt4sd_compatible.__doc__


@_each_beam
def text_postprocessor(output: object, example: Mapping | None = None, is_target: bool = False) -> str:
    """A caption or action sequence: special tokens dropped, whitespace collapsed."""
    return _clean(output)


@_each_beam
def retro_postprocessor(output: object, example: Mapping | None = None, is_target: bool = False):
    """Precursors; a target also carries its product (from the example) for round-trip accuracy."""
    precursors = smiles_postprocessor(output)
    if is_target and example is not None and "product" in example:
        return {"target": precursors, "product": smiles_postprocessor(example["product"])}
    return precursors
