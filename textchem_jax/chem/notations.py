"""Other notations of the same molecule(s), for notation-robustness evaluation.

A model that understands chemistry should give the same answer for every SMILES of one molecule
(AMORE, Ganeeva et al. 2024; SMILES probing). `rewrite` turns a SMILES into another notation of the
same molecule(s): RDKit's canonical form, the Kekulé form, all hydrogens as atoms, the same string with
fresh ring-closure labels, or a seeded random SMILES.

Inputs follow `smiles`' conventions: components separated by `.`, fragments of one component joined by
the RXN fragment bond `~`, ChEBI-20's doubled backslashes allowed. Each fragment is rewritten on its own
and components and `~` groups keep their written order (only "random" shuffles them, as
`randomize_smiles` does), so a rewritten precursor set is still a precursor set of the same shape.
Stereo, isotopes, charges and atom maps are kept (`canonicalize` of a rewrite equals that of the input).
"""

from __future__ import annotations

import re

from rdkit import Chem

from textchem_jax.chem.smiles import (
    COMPONENT_SEPARATOR,
    FRAGMENT_BOND,
    canonicalize,
    fragment_molecules,
    quoted,
    randomize_smiles,
)

NOTATIONS = ("canonical", "kekulized", "explicit_h", "rings_renumbered")
RANDOM = "random"
ORIGINAL = "original"  # the variant name of a SMILES as the data wrote it (evaluation tables)

# One SMILES token that matters for ring labels: a bracket atom (its digits are isotopes, H counts,
# charges, chirality classes or atom maps, never ring labels), a `%(n...)` or `%nn` label, a one-digit
# label, or any other single character.
_TOKEN = re.compile(r"\[[^\]]*\]|%\(\d+\)|%\d\d|\d|.", re.DOTALL)


def _fragments(smiles: str, notation: str) -> list[list[tuple[str, Chem.Mol]]]:
    """Components as lists of (fragment text, molecule); raises ValueError naming a fragment RDKit rejects."""
    if not isinstance(smiles, str):
        raise TypeError(f"cannot rewrite {quoted(smiles)} as {notation!r}: not a SMILES string but {type(smiles).__name__}")
    return fragment_molecules(smiles, f"rewrite {quoted(smiles)} as {notation!r}")


def _canonical(fragment: str, mol: Chem.Mol) -> str:
    return Chem.MolToSmiles(mol)


def _kekulized(fragment: str, mol: Chem.Mol) -> str:
    """Alternating single/double bonds instead of lowercase aromatic atoms (RDKit's canonical Kekulé form)."""
    mol = Chem.Mol(mol)
    Chem.Kekulize(mol, clearAromaticFlags=True)
    return Chem.MolToSmiles(mol, kekuleSmiles=True)


def _explicit_h(fragment: str, mol: Chem.Mol) -> str:
    """Every hydrogen as its own `[H]` atom, starting from a heavy atom.

    Rooted at a heavy atom on purpose: RDKit's canonical choice is usually an H atom, and when that
    first `[H]` carries the `/` or `\\` of a double bond whose other end opens a ring closure
    (`[H]/C1=C(/[H])CCCCCCCCCC1`, E-cyclododecene), RDKit reads the string back with the opposite
    double-bond stereo. Written from a heavy atom, every H follows its neighbour and reads back right.
    """
    with_h = Chem.AddHs(mol)
    heavy = [atom.GetIdx() for atom in with_h.GetAtoms() if atom.GetAtomicNum() != 1]
    if not heavy:  # [H][H], [H+]: nothing but hydrogens
        return Chem.MolToSmiles(with_h)
    ranks = Chem.CanonicalRankAtoms(with_h)
    root = min(heavy, key=lambda index: ranks[index])
    return Chem.MolToSmiles(with_h, rootedAtAtom=root)


def _is_label(token: str) -> bool:
    return token[0].isdigit() or (token[0] == "%" and len(token) > 1)


def _label_text(label: int) -> str:
    if label < 10:
        return str(label)
    return f"%{label}" if label < 100 else f"%({label})"


def _renumber_rings(fragment: str) -> str:
    """The same SMILES text with every ring-closure label replaced by one it did not use.

    Labels are handed out in order of opening, each the smallest number from 1 up that the input never
    used and that is not open at that point, so every ring bond gets a label different from its own and
    the string differs from the input whenever it has a ring closure. Bond symbols, atoms and their order
    (hence stereo) stay as written. Labels over 9 are written `%nn`, over 99 `%(nnn)`.
    """
    tokens = _TOKEN.findall(fragment)
    used = {int(t.strip("%()")) for t in tokens if _is_label(t)}
    open_labels: dict[int, int] = {}  # old label -> new label, while the ring bond is open
    out = []
    for token in tokens:
        if not _is_label(token):
            out.append(token)
            continue
        old = int(token.strip("%()"))
        if old in open_labels:
            out.append(_label_text(open_labels.pop(old)))
            continue
        taken = set(open_labels.values())
        new = 1
        while new in used or new in taken:
            new += 1
        open_labels[old] = new
        out.append(_label_text(new))
    return "".join(out)


def _rings_renumbered(fragment: str, mol: Chem.Mol) -> str:
    return _renumber_rings(fragment)


_WRITERS = {
    "canonical": _canonical,
    "kekulized": _kekulized,
    "explicit_h": _explicit_h,
    "rings_renumbered": _rings_renumbered,
}


def rewrite(smiles: str, notation: str, seed: int = 0) -> str:
    """`smiles` in another notation of the same molecule(s): one of `NOTATIONS`, or "random" (seeded).

    Each fragment is rewritten on its own; components and `~` groups keep their order, except for
    "random" (`randomize_smiles(smiles, seed)`, which also shuffles them). `seed` only affects "random".
    Raises ValueError for an unknown notation, or naming the fragment RDKit cannot read (with its reason);
    TypeError when `smiles` is not a string.
    """
    if notation != RANDOM and notation not in _WRITERS:
        raise ValueError(f"unknown notation {notation!r}; known: {', '.join((*NOTATIONS, RANDOM))}")
    components = _fragments(smiles, notation)
    if notation == RANDOM:
        return randomize_smiles(smiles, seed)
    write = _WRITERS[notation]
    return COMPONENT_SEPARATOR.join(
        FRAGMENT_BOND.join(write(fragment, mol) for fragment, mol in fragments) for fragments in components
    )


def variant_names(random_variants: int = 0) -> tuple[str, ...]:
    """The deterministic notations, then `random_0` ... `random_{n-1}`: the variants an evaluation reports."""
    return (*NOTATIONS, *(f"{RANDOM}_{index}" for index in range(random_variants)))


def _random_index(variant: str) -> int | None:
    """i of `random_i`, else None."""
    index = variant.removeprefix(f"{RANDOM}_")
    return int(index) if variant.startswith(f"{RANDOM}_") and index.isdigit() else None


def check_variant(variant: str) -> None:
    """Raises ValueError for a name that is no variant: a misspelt one in an evaluation's list (gin NOTATIONS)
    was rewritten by nothing, every input kept as written, and reported as a notation without a drop."""
    if variant not in _WRITERS and _random_index(variant) is None:
        raise ValueError(f"unknown notation {variant!r}; known: {', '.join(NOTATIONS)}, {RANDOM}_0, {RANDOM}_1, ...")


def rewrite_variant(smiles: str, variant: str, seed: int = 0) -> str:
    """`rewrite` by a variant name of `variant_names` (`random_i` is the random SMILES of seed `seed + i`)."""
    index = _random_index(variant)
    return rewrite(smiles, variant) if index is None else rewrite(smiles, RANDOM, seed + index)


def variants(smiles: str, random_variants: int = 0, seed: int = 0) -> dict[str, str]:
    """{variant name: `smiles` in it} for every name of `variant_names(random_variants)`."""
    return {name: rewrite_variant(smiles, name, seed) for name in variant_names(random_variants)}


def same_molecule(a: object, b: object) -> bool:
    """Whether two SMILES name the same molecule(s) (`canonicalize`, isomeric); unreadable never matches."""
    canonical = canonicalize(a)
    return canonical is not None and canonical == canonicalize(b)
