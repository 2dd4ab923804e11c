"""Reaction SMILES: parsing, atom-map removal and the Text+Chem T5 precursor format.

Reaction SMILES come as `reactants>reagents>products` (USPTO-50K writes `reactants>>product`;
USPTO-MIT appends bond edits after a space; Pistachio-style exports append a CXSMILES `|f:...|` block
that groups fragments of one component, which we write with the RXN fragment bond `~`).
"""

from __future__ import annotations

import dataclasses
import re

from textchem_jax.chem.smiles import (
    COMPONENT_SEPARATOR,
    FRAGMENT_BOND,
    canonical_fragment,
    parse_smiles,
    quoted,
)

_EXTENSION = re.compile(r"\||\d+-\d+")  # what may follow a reaction's space: CXSMILES, USPTO-MIT bond edits
# A CXSMILES block `|field,field,...|` holds comma-separated fields, each opened by its code (`f:`, `c:`, `$`, `(`,
# `^1:` ...). The `f:` field is dot-joined molecule indices per group, groups comma-separated, and it ends at the
# block's `|` or at a comma opening the next field, so a field such as `f:0-1` or `f:0.1x` is malformed.
_FRAGMENT_FIELD_START = re.compile(r"(?<=[|,])f:")
_FRAGMENT_FIELD = re.compile(r"f:(\d+(?:\.\d+)+(?:,\d+(?:\.\d+)+)*)(?=\||,[^\d,|])")
_ATOM_MAP = re.compile(r"(\[[^\]]*?):\d+\]")


@dataclasses.dataclass(frozen=True)
class Reaction:
    """A reaction as three tuples of component SMILES (a component may hold `~` fragments)."""

    reactants: tuple[str, ...]
    reagents: tuple[str, ...]
    products: tuple[str, ...]

    @property
    def precursors(self) -> tuple[str, ...]:
        """Everything on the left: Text+Chem T5 does not distinguish reactants from reagents."""
        return self.reactants + self.reagents


def _split(side: str) -> list[str]:
    return [part for part in side.split(COMPONENT_SEPARATOR) if part]


def _fragment_groups(extension: str) -> list[str]:
    """The `i.j` groups of every CXSMILES `f:` field in `extension`; raises ValueError on a malformed field.

    The old pattern `f:([0-9.,]+)` read the longest valid prefix, so `f:0-1` lost its group unsaid, `f:0.1;3.4`
    kept only `0.1` and `f:0.1x` was accepted.
    """
    groups = []
    for start in _FRAGMENT_FIELD_START.finditer(extension):
        field = _FRAGMENT_FIELD.match(extension, start.start())
        if field is None:
            written = re.split(r"\|", extension[start.start():], maxsplit=1)[0]
            raise ValueError(f"fragment groups {quoted(written)}: expected 'f:' followed by molecule indices, as "
                             "f:1.2,4.5 (groups of two or more, ending at '|' or the next field)")
        groups.extend(field.group(1).split(","))
    return groups


def _apply_fragment_groups(molecules: list[str], sides: list[int], extension: str) -> list[list[str]]:
    """Merges molecules named together in a CXSMILES `f:i.j,k.l` block into `~` groups (`sides[i]`: the side
    of molecule i, since a group is one component and cannot span two sides)."""
    owner = list(range(len(molecules)))
    for group in _fragment_groups(extension):
        indices = [int(i) for i in group.split(".")]
        if any(i >= len(molecules) for i in indices):
            raise ValueError(f"fragment group f:{group} names a molecule past the {len(molecules)} present")
        if len({sides[i] for i in indices}) > 1:
            raise ValueError(f"fragment group f:{group} joins molecules of different sides of the reaction "
                             "(reactants, reagents, products): a group is one component")  # fmt: skip
        for index in indices[1:]:
            owner[index] = indices[0]
    merged: dict[int, list[str]] = {}
    for index, smiles in enumerate(molecules):
        merged.setdefault(owner[index], []).append(smiles)
    return [merged.get(i, []) for i in range(len(molecules))]


def parse_reaction(reaction: str) -> Reaction:
    """Parses reaction SMILES; raises ValueError naming what is wrong.

    Only the syntax is checked here; molecules are validated by `remove_atom_maps` /
    `precursors_and_products`, which say which component failed.
    """
    if not isinstance(reaction, str) or not reaction.strip():
        raise ValueError(f"empty or non-string reaction SMILES: {quoted(reaction)}")
    text, _, extension = reaction.strip().partition(" ")
    if extension and not _EXTENSION.match(extension):  # "CC>>CCO O" lost its product O
        raise ValueError(f"reaction SMILES with a space inside: {quoted(reaction)}; a space ends the reaction (bond "
                         "edits or a CXSMILES block follow it), so remove the spaces within it")  # fmt: skip
    parts = text.split(">")
    if len(parts) != 3:
        raise ValueError(f"reaction SMILES needs 'reactants>reagents>products' (two '>'), got {len(parts) - 1}: "
                         f"{quoted(reaction)}")
    sides = [_split(part) for part in parts]
    if not sides[0] or not sides[2]:
        raise ValueError(f"reaction SMILES without reactants or products: {quoted(reaction)}")
    molecules = [m for side in sides for m in side]
    try:
        groups = _apply_fragment_groups(molecules, [i for i, side in enumerate(sides) for _ in side], extension)
    except ValueError as error:
        raise ValueError(f"reaction {quoted(reaction)}: {error}") from None
    grouped, start = [], 0
    for side in sides:
        indices = range(start, start + len(side))
        grouped.append(tuple(FRAGMENT_BOND.join(groups[i]) for i in indices if groups[i]))
        start += len(side)
    return Reaction(*grouped)


def remove_atom_maps(smiles: str) -> str:
    """Canonical SMILES with atom-map numbers removed; `~` groups and component order kept.

    Raises ValueError naming the fragment that does not parse.
    """
    components = []
    for component in smiles.split(COMPONENT_SEPARATOR):
        fragments = []
        for fragment in component.split(FRAGMENT_BOND):
            unmapped = canonical_fragment(fragment, atom_maps=False)
            if unmapped is None:
                raise ValueError(f"cannot read {quoted(fragment)} in {quoted(smiles)}: {parse_smiles(fragment).reason}")
            fragments.append(unmapped)
        components.append(FRAGMENT_BOND.join(fragments))
    return COMPONENT_SEPARATOR.join(components)


def precursors_string(components: tuple[str, ...] | list[str]) -> str:
    """The Text+Chem T5 precursor format: canonical components, sorted, `.`-joined, `~` groups kept.

    It is the forward-prediction input and the retrosynthesis target. Atom maps are removed.
    Raises ValueError when a component does not parse.
    """
    canonical = []
    for component in components:
        fragments = []
        for fragment in component.split(FRAGMENT_BOND):
            unmapped = canonical_fragment(fragment, atom_maps=False)
            if unmapped is None:
                raise ValueError(f"cannot read {quoted(fragment)}: {parse_smiles(fragment).reason}")
            fragments.extend(unmapped.split(COMPONENT_SEPARATOR))
        canonical.append(FRAGMENT_BOND.join(sorted(fragments)))
    return COMPONENT_SEPARATOR.join(sorted(canonical))


def precursors_and_products(reaction: str) -> tuple[str, str]:
    """`(precursors, products)` of a reaction SMILES in the Text+Chem T5 format."""
    parsed = parse_reaction(reaction)
    return precursors_string(parsed.precursors), precursors_string(parsed.products)


def precursors_and_products_as_written(reaction: str) -> tuple[str, str]:
    """`(precursors, products)` without RDKit: atom maps stripped from the text, components sorted.

    For evaluation rows RDKit cannot read (e.g. USPTO-MIT's pentavalent carbons): the row stays in the
    split and counts as a miss instead of shrinking the denominator. Raises ValueError on bad syntax.
    """
    parsed = parse_reaction(reaction)
    return _unmapped_text(parsed.precursors), _unmapped_text(parsed.products)


def _unmapped_text(components: tuple[str, ...]) -> str:
    return COMPONENT_SEPARATOR.join(sorted(_ATOM_MAP.sub(r"\1]", c) for c in components))
