"""SMILES parsing, canonical forms, InChI and seeded randomization with RDKit.

Nothing here raises on bad input: parsing returns a `ParsedSmiles` whose `reason` says why a string
was rejected, and RDKit's own console chatter is captured instead of printed.

Two chemistry-text conventions are handled everywhere:
- ChEBI-20 stores every backslash doubled (`\\\\`); `unescape_backslashes` restores the single `\\`
  (a real SMILES never holds two bond symbols `\\\\` in a row, so the rewrite is safe).
- The RXN fragment bond `~` joins the fragments of one component (a salt such as `[Na+]~[OH-]`),
  while `.` separates components. RDKit cannot read `~`, so fragments are parsed one by one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
import threading

from rdkit import Chem, rdBase

FRAGMENT_BOND = "~"
COMPONENT_SEPARATOR = "."
# Longer SMILES are rejected unread: RDKit writes SMILES recursively, one stack frame per atom of a chain, and a
# 20,000-atom chain overflows an 8 MB stack (the process dies); the longest in ChEBI-20 and USPTO is 1,598.
MAX_SMILES_LENGTH = 5_000
# Errors and reasons quote a longer SMILES as its first and last characters and its length (see `quoted`).
_QUOTED_LENGTH, _QUOTED_HEAD, _QUOTED_TAIL = 60, 40, 17
_LOG_PREFIX = re.compile(r"^\[\d\d:\d\d:\d\d\] ")

# RDKit's log switches (BlockLogs, CaptureErrorLog) change one process-wide logger. Entered and left by two
# threads at once (the evaluator scores each task on its own thread), they restore each other's state in the
# wrong order: four threads parsing here left every later RDKit error unprinted, and a test worker died of a
# segfault at its next RDKit error (most likely written into a capture that no longer existed). One lock keeps
# each switch whole.
_RDKIT_LOGS = threading.RLock()


@contextlib.contextmanager
def quiet_rdkit():
    """RDKit's console messages off for the block, safely across threads (`rdBase.BlockLogs` under our lock)."""
    with _RDKIT_LOGS, rdBase.BlockLogs():
        yield


@dataclasses.dataclass(frozen=True)
class ParsedSmiles:
    """Outcome of parsing one SMILES: the molecule, or the reason there is none."""

    smiles: object
    mol: Chem.Mol | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.mol is not None


def unescape_backslashes(smiles: str) -> str:
    """Undo ChEBI-20's doubled backslashes (`C/C=C\\\\\\\\C` -> `C/C=C\\\\C`)."""
    return smiles.replace("\\\\", "\\")


def quoted(value: object) -> str:
    """`value` quoted for an error message, cut to its first and last characters plus its length when long.

    Messages quoted user SMILES whole: `randomize_smiles('C' * 6000, seed=1)` raised a 12,095-character error.
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= _QUOTED_LENGTH:
        return repr(value)
    return f"{text[:_QUOTED_HEAD] + '...' + text[-_QUOTED_TAIL:]!r} ({len(text):,} characters)"


def _first_rdkit_message(messages: str, smiles: str) -> str:
    """RDKit's first error line, with the SMILES it echoes (`... for input: 'C1CC'`) quoted by `quoted`."""
    lines = [_LOG_PREFIX.sub("", line).strip() for line in messages.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "RDKit rejected the SMILES"
    if len(smiles) <= _QUOTED_LENGTH:
        return lines[0]
    return lines[0].replace(f"'{smiles}'", smiles).replace(smiles, quoted(smiles))


def _as_text(smiles: object) -> str | None:
    if isinstance(smiles, bytes):
        try:
            return smiles.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return smiles if isinstance(smiles, str) else None


def parse_smiles(smiles: object) -> ParsedSmiles:
    """Parses one SMILES (fragment bonds and doubled backslashes allowed) without raising."""
    text = _as_text(smiles)
    if text is None:
        return ParsedSmiles(smiles, None, f"not a SMILES string but {type(smiles).__name__}")
    text = unescape_backslashes(text.strip())
    if not text:
        return ParsedSmiles(smiles, None, "empty SMILES")
    if len(text) > MAX_SMILES_LENGTH:
        return ParsedSmiles(smiles, None, f"longer than {MAX_SMILES_LENGTH:,} characters (RDKit would overflow its stack)")
    if not text.isascii():
        return ParsedSmiles(smiles, None, "non-ASCII characters are not SMILES")
    if any(c.isspace() for c in text):
        return ParsedSmiles(smiles, None, "whitespace inside a SMILES")
    if not text.isprintable():  # RDKit reads "CC\0" as CC: a NUL would pass silently
        return ParsedSmiles(smiles, None, "control characters are not SMILES")
    rdkit_text = text.replace(FRAGMENT_BOND, COMPONENT_SEPARATOR)
    with quiet_rdkit(), rdBase.CaptureErrorLog() as captured:  # warnings dropped, errors kept (one lock for both)
        mol = Chem.MolFromSmiles(rdkit_text)
    if mol is None:
        return ParsedSmiles(smiles, None, _first_rdkit_message(captured.messages, rdkit_text))
    if mol.GetNumAtoms() == 0:
        return ParsedSmiles(smiles, None, "SMILES without atoms")
    return ParsedSmiles(smiles, mol)


def canonical_fragment(fragment: str, *, isomeric: bool = True, atom_maps: bool = True) -> str | None:
    """Canonical SMILES of one fragment (no `~`), or None; `atom_maps=False` removes map numbers."""
    parsed = parse_smiles(fragment)
    if not parsed.ok:
        return None
    mol = parsed.mol
    mapped = not atom_maps and any(atom.GetAtomMapNum() for atom in mol.GetAtoms())
    if mapped:
        for atom in mol.GetAtoms():
            atom.SetAtomMapNum(0)
    smiles = Chem.MolToSmiles(mol, isomericSmiles=isomeric)
    if mapped and any(c in smiles for c in "@/\\"):
        # Bracket atoms of mapped SMILES (`[CH3:1]`) carry explicit-H flags that can change RDKit's
        # canonical stereo (seen on ring stereo in USPTO-50K); one re-read gives the true canonical form.
        with quiet_rdkit():
            smiles = Chem.MolToSmiles(Chem.MolFromSmiles(smiles), isomericSmiles=isomeric)
    return smiles


def canonical_components(
    smiles: object, *, isomeric: bool = True, atom_maps: bool = True
) -> tuple[str, ...] | None:
    """Sorted canonical components; each keeps its `~` fragment group (itself sorted).

    This is the order-independent form used to compare precursor sets: `B.A~C` and `C~A.B` give the
    same tuple. Returns None when any fragment does not parse.
    """
    text = _as_text(smiles)
    if text is None or not text.strip():
        return None
    components = []
    for component in unescape_backslashes(text.strip()).split(COMPONENT_SEPARATOR):
        fragments = [canonical_fragment(f, isomeric=isomeric, atom_maps=atom_maps) for f in component.split(FRAGMENT_BOND)]
        if not component or any(f is None for f in fragments):
            return None
        # A fragment may itself canonicalize to several dot-separated pieces (`C.C` inside one part).
        pieces = sorted(p for f in fragments for p in f.split(COMPONENT_SEPARATOR))
        if FRAGMENT_BOND in component:
            components.append(FRAGMENT_BOND.join(pieces))
        else:
            components.extend(pieces)
    return tuple(sorted(components))


def canonicalize(smiles: object, *, isomeric: bool = True) -> str | None:
    """Canonical SMILES, or None for anything RDKit cannot read (see `canonicalize_with_reason`).

    Components are sorted and `~` groups are kept, so the result does not depend on the order in which
    the components or fragments were written.
    """
    components = canonical_components(smiles, isomeric=isomeric)
    return None if components is None else COMPONENT_SEPARATOR.join(components)


def canonicalize_with_reason(smiles: object, *, isomeric: bool = True) -> tuple[str | None, str | None]:
    """`(canonical, None)` on success, `(None, reason)` otherwise."""
    canonical = canonicalize(smiles, isomeric=isomeric)
    if canonical is not None:
        return canonical, None
    text = _as_text(smiles)
    if text is None or not text.strip():
        return None, parse_smiles(smiles).reason
    for component in unescape_backslashes(text.strip()).split(COMPONENT_SEPARATOR):
        for fragment in component.split(FRAGMENT_BOND):
            parsed = parse_smiles(fragment)
            if not parsed.ok:
                return None, f"fragment {quoted(fragment)}: {parsed.reason}"
    return None, "RDKit rejected the SMILES"


def molecule_key(smiles: object) -> str | None:
    """Canonical form for comparing predictions: ignores fragment grouping and atom maps.

    `[Na+]~[OH-]`, `[OH-].[Na+]` and `[Na+:3].[OH-:4]` all give the same key.
    """
    text = _as_text(smiles)
    if text is None:
        return None
    components = canonical_components(text.replace(FRAGMENT_BOND, COMPONENT_SEPARATOR), atom_maps=False)
    return None if components is None else COMPONENT_SEPARATOR.join(components)


def fragment_molecules(smiles: str, action: str) -> list[list[tuple[str, Chem.Mol]]]:
    """Each `.` component as its `~` fragments, (text, molecule) in written order, for rewriting them one by
    one; raises ValueError ("cannot <action>: fragment ...") naming the fragment RDKit rejects, with its reason."""
    if not isinstance(smiles, str):
        raise ValueError(f"cannot {action}: expected a SMILES string, got {type(smiles).__name__}")
    components = []
    for component in unescape_backslashes(smiles.strip()).split(COMPONENT_SEPARATOR):
        fragments = []
        for fragment in component.split(FRAGMENT_BOND):
            parsed = parse_smiles(fragment)
            if not parsed.ok:
                raise ValueError(f"cannot {action}: fragment {quoted(fragment)}: {parsed.reason}")
            fragments.append((fragment, parsed.mol))
        components.append(fragments)
    return components


def randomize_smiles(smiles: str, seed: int | random.Random, *, shuffle_components: bool = True) -> str:
    """A random, valid, non-canonical SMILES of the same molecule(s), reproducible for a seed.

    Atoms are renumbered by a seeded permutation (RDKit's own `doRandom` uses a global RNG), so the
    output depends only on `seed` and the input. `~` groups and components keep their grouping.
    Raises ValueError when the input does not parse (augmentation must not invent molecules).
    """
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    components = []
    for parsed_fragments in fragment_molecules(smiles, f"randomize {quoted(smiles)}"):
        fragments = []
        for _, mol in parsed_fragments:
            order = list(range(mol.GetNumAtoms()))
            rng.shuffle(order)
            shuffled = Chem.RenumberAtoms(mol, order)
            fragments.append(Chem.MolToSmiles(shuffled, canonical=False))
        if shuffle_components:
            rng.shuffle(fragments)
        components.append(FRAGMENT_BOND.join(fragments))
    if shuffle_components:
        rng.shuffle(components)
    return COMPONENT_SEPARATOR.join(components)


def inchi(smiles: object) -> str | None:
    """Standard InChI (fragment bonds read as `.`), or None when RDKit cannot produce one."""
    parsed = parse_smiles(smiles)
    if not parsed.ok:
        return None
    with quiet_rdkit():
        value = Chem.MolToInchi(parsed.mol)
    return value or None


def inchikey(smiles: object) -> str | None:
    """Standard InChIKey, or None when RDKit cannot produce one."""
    value = inchi(smiles)
    if value is None:
        return None
    with quiet_rdkit():
        key = Chem.InchiToInchiKey(value)
    return key or None
