"""Molecules of the demo corpus: scaffolds with attachment points, filled from substituent lists.

Why a module: both the ChEBI-20 style molecules and the reaction substrates are drawn from this one
inventory, so they live apart from what describes them (`descriptions`) or reacts them (`reactions`).
"""

from __future__ import annotations

import random

from rdkit import Chem
from rdkit.Chem import Descriptors

# Molecule assembly: scaffolds with numbered attachment points, each point filled from a site list.
# Site kinds: "r" any substituent on carbon, "a" an aryl group, "n" a group on nitrogen,
# "x" a group that makes a stereocentre on a CH(CH3) linker.

_SUBSTITUENTS_ON_CARBON = (
    "C", "CC", "C(C)C", "C(C)(C)C", "C(F)(F)F", "F", "Cl", "Br", "O", "OC", "OCC", "OC(F)(F)F",
    "N", "N(C)C", "NC(C)=O", "[N+](=O)[O-]", "C#N", "C(=O)O", "C(=O)OC", "C(=O)OCC", "C(N)=O",
    "C(=O)NC", "C(C)=O", "C=O", "S(N)(=O)=O", "S(C)(=O)=O", "SC", "CO", "CN", "CC(=O)O",
    "c1ccccc1", "c1ccc(Cl)cc1", "c1cccnc1", "N1CCOCC1", "N1CCCCC1", "C1CC1", "OCc1ccccc1", "C=C",
    "/C=C/C(=O)O", "/C=C/C(=O)OCC", "/C=C\\C", "[C@@H](C)N", "[C@H](C)O", "OC(C)=O", "B(O)O",
    "NC(=O)OC(C)(C)C", "CNC(=O)OC(C)(C)C",
)
_ARYL_GROUPS = (
    "c1ccccc1", "c1ccc(Cl)cc1", "c1ccc(F)cc1", "c1ccc(OC)cc1", "c1ccc(C)cc1", "c1ccc(Br)cc1",
    "c1ccc([N+](=O)[O-])cc1", "c1ccc(C(=O)O)cc1", "c1ccc(C(=O)OC)cc1", "c1cccnc1", "c1ccncc1",
    "c1cccs1", "c1ccco1", "c1ccc2ccccc2c1", "c1cccc(O)c1", "c1ccc(N)cc1", "c1ccc(C#N)cc1",
    "c1ccc(C(F)(F)F)cc1",
)
_GROUPS_ON_NITROGEN = (
    "C", "CC", "Cc1ccccc1", "C(C)=O", "C(=O)OC(C)(C)C", "c1ccccc1", "S(C)(=O)=O", "CCO",
    "c1ccccn1", "C(=O)c1ccccc1", "CC(=O)O", "C1CC1",
)
_STEREOCENTRE_GROUPS = ("C(=O)O", "N", "O", "C(=O)OC", "C(N)=O", "CO", "NC(C)=O", "C#N", "NC(=O)OC(C)(C)C")
_SITE_GROUPS = {"r": _SUBSTITUENTS_ON_CARBON, "a": _ARYL_GROUPS, "n": _GROUPS_ON_NITROGEN, "x": _STEREOCENTRE_GROUPS}

_SCAFFOLDS = (  # (SMILES with [*:i] attachment points, site kind of point i)
    ("c1ccc([*:1])cc1", "r"),
    ("[*:1]c1ccc([*:2])cc1", "rr"),
    ("[*:1]c1cccc([*:2])c1", "rr"),
    ("[*:1]c1ccccc1[*:2]", "rr"),
    ("[*:1]c1cc([*:2])cc([*:3])c1", "rrr"),
    ("[*:1]c1ccc([*:2])c([*:3])c1", "rrr"),
    ("[*:1]c1ccc([*:2])cn1", "rr"),
    ("[*:1]c1cccnc1", "r"),
    ("[*:1]c1ccncc1", "r"),
    ("[*:1]c1ncc([*:2])cn1", "rr"),
    ("[*:1]c1ccc([*:2])s1", "rr"),
    ("[*:1]c1ccc([*:2])o1", "rr"),
    ("[*:1]c1ccc2cc([*:2])ccc2c1", "rr"),
    ("[*:1]c1ccc2[nH]ccc2c1", "r"),
    ("[*:1]N1CCC([*:2])CC1", "nr"),
    ("[*:1]N1CCN([*:2])CC1", "na"),
    ("[*:1]N1CCNCC1", "a"),
    ("[*:1]C1CCNCC1", "a"),
    ("[*:1]C1CCCCC1", "r"),
    ("[*:1]/C=C/[*:2]", "aa"),
    ("[*:1]/C=C\\[*:2]", "aa"),
    ("[*:1]/C=C/C(=O)[*:2]", "aa"),
    ("[*:1][C@@H](C)[*:2]", "ax"),
    ("[*:1][C@H](C)[*:2]", "ax"),
    ("[*:1]C(=O)N[*:2]", "aa"),
    ("[*:1]C(=O)NC[*:2]", "aa"),
    ("[*:1]OC[*:2]", "aa"),
    ("[*:1]CC[*:2]", "ar"),
)
_MAX_HEAVY_ATOMS = 40
_PATTERNS: dict[str, Chem.Mol] = {}


def smarts_pattern(smarts: str) -> Chem.Mol:
    """The parsed SMARTS, parsed once (shared by the descriptions and the reaction templates)."""
    if smarts not in _PATTERNS:
        _PATTERNS[smarts] = Chem.MolFromSmarts(smarts)
    return _PATTERNS[smarts]


def _assemble(rng: random.Random) -> Chem.Mol | None:
    """One molecule from a random scaffold and substituents, or None when RDKit rejects it."""
    scaffold, sites = rng.choice(_SCAFFOLDS)
    pieces = [scaffold] + [f"[*:{i}]{rng.choice(_SITE_GROUPS[kind])}" for i, kind in enumerate(sites, start=1)]
    joined = Chem.MolFromSmiles(".".join(pieces))
    if joined is None:
        return None
    try:
        mol = Chem.molzip(joined)
        Chem.SanitizeMol(mol)
    except (RuntimeError, ValueError):
        return None
    mol = Chem.MolFromSmiles(Chem.MolToSmiles(mol))  # a clean re-read: canonical, fresh properties
    if mol is None or mol.GetNumHeavyAtoms() > _MAX_HEAVY_ATOMS or Descriptors.NumRadicalElectrons(mol):
        return None
    return mol


def unique_molecules(rng: random.Random, count: int) -> list[tuple[str, Chem.Mol]]:
    """`count` distinct assembled molecules as (canonical SMILES, mol), in generation order."""
    seen: set[str] = set()
    molecules = []
    for _ in range(max(100, 50 * count)):
        if len(molecules) == count:
            break
        mol = _assemble(rng)
        if mol is None:
            continue
        smiles = Chem.MolToSmiles(mol)
        if smiles not in seen:
            seen.add(smiles)
            molecules.append((smiles, mol))
    if len(molecules) < count:
        raise ValueError(f"the demo inventory gave only {len(molecules)} distinct molecules, {count} asked")
    return molecules

