"""ChEBI-20 style descriptions computed from a molecule's structure (classes, rings, stereo, properties).

Why a module: the English that pairs a molecule with its text is one idea, and the public
`describe_molecule` is used on its own (tests, the text2mol examples).
"""

from __future__ import annotations

import random

from rdkit import Chem
from rdkit.Chem import Descriptors, rdCIPLabeler, rdMolDescriptors

from textchem_jax.data.demo.molecules import smarts_pattern

# Descriptions: ChEBI-style English computed from the structure.

# (class name as ChEBI writes it, SMARTS); the order is the priority for the molecule's main class.
_FUNCTIONAL_GROUPS = (
    ("carboxylic acid", "[CX3](=O)[OX2H1]"),
    ("carboxylic ester", "[#6][CX3](=O)[OX2][#6]"),
    ("carbamate ester", "[NX3][CX3](=O)[OX2][#6]"),
    ("sulfonamide", "[SX4](=O)(=O)[NX3]"),
    ("carboxamide", "[#6][CX3](=O)[NX3]"),
    ("boronic acid", "[#6][BX3]([OX2H1])[OX2H1]"),
    ("aldehyde", "[CX3H1](=O)[#6]"),
    ("ketone", "[#6][CX3](=O)[#6]"),
    ("nitrile", "[NX1]#[CX2]"),
    ("C-nitro compound", "[#6][NX3+](=O)[O-]"),
    ("sulfone", "[#6][SX4](=O)(=O)[#6]"),
    ("primary arylamine", "[NX3H2]c"),
    ("primary aliphatic amine", "[NX3H2][CX4]"),
    ("secondary amine", "[NX3H1;!$(N[C,S]=[O,S,N]);!$(N[SX4])]([#6])[#6]"),
    ("tertiary amine", "[NX3H0;!$(N[C,S]=[O,S,N]);!$(N[SX4])]([#6])([#6])[#6]"),
    ("primary alcohol", "[CX4H2][OX2H1]"),
    ("secondary alcohol", "[CX4H1][OX2H1]"),
    ("member of phenols", "c[OX2H1]"),
    ("aromatic ether", "c[OX2][CX4,c]"),
    ("dialkyl ether", "[CX4][OX2][CX4]"),
    ("organic sulfide", "[#6][SX2][#6]"),
    ("organochlorine compound", "[#6]Cl"),
    ("organofluorine compound", "[#6]F"),
    ("organobromine compound", "[#6]Br"),
    ("olefinic compound", "[CX3]=[CX3]"),
)
# Finer classes listed in the second sentence next to the general ones.
_SUBCLASSES = (
    ("methyl ester", "[#6][CX3](=O)[OX2][CH3]"),
    ("ethyl ester", "[#6][CX3](=O)[OX2][CH2][CH3]"),
    ("benzoate ester", "[$(c1ccccc1)][CX3](=O)[OX2][#6]"),
    ("anilide", "c[NX3H1][CX3](=O)[#6]"),
    ("tert-butyl ester", "[#6][CX3](=O)[OX2]C([CH3])([CH3])[CH3]"),
    ("(trifluoromethyl)arene", "cC(F)(F)F"),
)
_RING_CLASSES = (
    ("member of benzenes", "[c;R1]1[c;R1][c;R1][c;R1][c;R1][c;R1]1"),
    ("member of pyridines", "c1ccncc1"),
    ("member of pyrimidines", "c1cncnc1"),
    ("member of thiophenes", "c1ccsc1"),
    ("member of furans", "c1ccoc1"),
    ("member of indoles", "c1ccc2[nH]ccc2c1"),
    ("member of naphthalenes", "c1ccc2ccccc2c1"),
    ("member of piperidines", "C1CCNCC1"),
    ("member of piperazines", "C1CNCCN1"),
    ("member of morpholines", "C1COCCN1"),
    ("member of cyclohexanes", "[CX4]1[CX4][CX4][CX4][CX4][CX4]1"),
    ("member of cyclopropanes", "[CX4]1[CX4][CX4]1"),
)
_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_MULTIPLICITY = {2: "di", 3: "tri", 4: "tetra"}


def _matches(mol: Chem.Mol, smarts: str) -> int:
    return len(mol.GetSubstructMatches(smarts_pattern(smarts)))


def _article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _count(number: int, noun: str, plural: str | None = None) -> str:
    word = _NUMBER_WORDS[number] if number < len(_NUMBER_WORDS) else str(number)
    return f"{word} {noun if number == 1 else plural or noun + 's'}"


def listing(items: list[str]) -> str:
    """`a`, `a and b`, `a, b and c` (also used by the procedure sentences)."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _classes(mol: Chem.Mol) -> tuple[list[str], list[str]]:
    """(functional-group classes in priority order, ring classes) that the molecule matches."""
    groups = []
    for name, smarts in _FUNCTIONAL_GROUPS:
        found = _matches(mol, smarts)
        if not found:
            continue
        if name == "carboxylic acid":
            name = "monocarboxylic acid" if found == 1 else f"{_MULTIPLICITY.get(found, 'poly')}carboxylic acid"
        elif name == "carboxylic ester" and found > 1:
            name = f"carboxylic {_MULTIPLICITY.get(found, 'poly')}ester"
        elif name == "carboxamide" and found > 1:
            name = f"{_MULTIPLICITY.get(found, 'poly')}carboxamide"
        groups.append(name)
    groups += [name for name, smarts in _SUBCLASSES if _matches(mol, smarts)]
    rings = [name for name, smarts in _RING_CLASSES if _matches(mol, smarts)]
    return groups, rings


def _stereo_sentence(mol: Chem.Mol, rng: random.Random) -> str | None:
    """CIP labels in words, so `@` and `/` `\\` in the SMILES have a counterpart in the text."""
    labelled = Chem.Mol(mol)
    rdCIPLabeler.AssignCIPLabels(labelled)
    centres = [a.GetProp("_CIPCode") for a in labelled.GetAtoms() if a.HasProp("_CIPCode")]
    bonds = [b.GetProp("_CIPCode") for b in labelled.GetBonds() if b.HasProp("_CIPCode")]
    parts = []
    if len(centres) == 1:
        parts.append(rng.choice((f"It has ({centres[0]})-configuration at its only stereocentre",
                                 f"It is the ({centres[0]})-enantiomer")))
    elif centres:
        parts.append(f"It has {_count(len(centres), 'stereocentre')} with ({','.join(centres)})-configuration")
    if len(bonds) == 1:
        parts.append(rng.choice((f"its double bond has ({bonds[0]})-geometry",
                                 f"it contains an ({bonds[0]})-configured double bond")))
    elif bonds:
        parts.append(f"its double bonds have ({','.join(bonds)})-geometry")
    if not parts:
        return None
    sentence = " and ".join(parts)
    return sentence[0].upper() + sentence[1:] + "."


def _property_sentences(mol: Chem.Mol, rng: random.Random) -> list[str]:
    weight = Descriptors.MolWt(mol)
    acceptors, donors = rdMolDescriptors.CalcNumHBA(mol), rdMolDescriptors.CalcNumHBD(mol)
    rotatable = rdMolDescriptors.CalcNumRotatableBonds(mol)
    options = [
        f"It has a molecular weight of {weight:.1f} and {_count(acceptors, 'hydrogen bond acceptor')}.",
        f"Its molecular formula is {rdMolDescriptors.CalcMolFormula(mol)}.",
        f"It has {_count(donors, 'hydrogen bond donor')} and {_count(rotatable, 'rotatable bond')}.",
        f"It has a topological polar surface area of {rdMolDescriptors.CalcTPSA(mol):.1f} "
        f"and a calculated logP of {Descriptors.MolLogP(mol):.2f}.",
    ]
    return rng.sample(options, rng.choice((1, 2)))


def describe_molecule(molecule: str | Chem.Mol, rng: random.Random) -> str:
    """A ChEBI-20 style description computed from the structure; `rng` only picks the wording."""
    mol = Chem.MolFromSmiles(molecule) if isinstance(molecule, str) else molecule
    if mol is None:
        raise ValueError(f"cannot describe an unreadable SMILES: {molecule!r}")
    groups, ring_classes = _classes(mol)
    named = groups + ring_classes
    if named:
        main = named[0]
    else:
        main = "hydrocarbon" if all(a.GetSymbol() in ("C", "H") for a in mol.GetAtoms()) else "organic compound"
    rings = mol.GetRingInfo().NumRings()
    aromatic = rdMolDescriptors.CalcNumAromaticRings(mol)
    if not rings:
        first = f"The molecule is an acyclic {main}."
    else:
        first = rng.choice((
            f"The molecule is {_article(main)} containing {_count(rings, 'ring')}.",
            f"The molecule is {_article(main)} with {_count(rings, 'ring')}, "
            f"{_count(aromatic, 'aromatic ring')} among them."
            if aromatic != rings else f"The molecule is {_article(main)} with {_count(rings, 'aromatic ring')}.",
            f"The molecule is {_article(main)} built from {_count(mol.GetNumHeavyAtoms(), 'heavy atom')} "
            f"in {_count(rings, 'ring')}.",
        ))
    sentences = [first]
    others = [name for name in named if name != main]
    if others:
        sentences.append(f"It is {listing([_article(name) for name in others])}.")
    stereo = _stereo_sentence(mol, rng)
    if stereo:
        sentences.append(stereo)
    sentences += _property_sentences(mol, rng)
    return " ".join(sentences)

