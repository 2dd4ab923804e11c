"""A small, chemically valid demo corpus for all five Text+Chem T5 tasks, in the real datasets' formats.

Why: the README's main job and the tests need data that exists without a download and loads with the
same readers as ChEBI-20, USPTO-MIT and paragraph2actions. Everything comes from our own inventory
below (building blocks, reaction templates, procedure templates), is checked with RDKit, and is
deterministic for a seed: two calls with the same seed write byte-identical files (for one RDKit
version, since canonical SMILES may change between versions).

- ChEBI-20 style molecules are assembled from scaffolds and substituents (`Chem.molzip`); their
  descriptions are computed from the structure (SMARTS-detected classes, rings, stereo, properties),
  so a model can learn both directions.
- Reactions apply RDKit reaction templates (esterification, amide coupling, Suzuki coupling, ...)
  to assembled substrates and a partner inventory; reagents and salts are mixed into the left side.
- Procedure sentences and their action sequences are generated together from templates, so every
  target parses with `parse_actions`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import random
import shutil
import tempfile

from rdkit import Chem, rdBase
from rdkit.Chem import Descriptors, rdChemReactions, rdCIPLabeler, rdMolDescriptors

__all__ = ["DEMO_FILES", "DEMO_VERSION", "demo_data_dir", "describe_molecule", "write_demo_corpus"]

# Bump whenever the generator's output changes, so cached corpora are rebuilt.
DEMO_VERSION = "1"

CHEBI_SPLITS = ("train", "validation", "test")
USPTO_SPLITS = ("train", "valid", "test")
PARAGRAPH_SPLITS = ("train", "valid", "test")

DEMO_FILES: tuple[str, ...] = (
    *(f"chebi20/{split}.txt" for split in CHEBI_SPLITS),
    *(f"uspto_mit/{split}.txt" for split in USPTO_SPLITS),
    *(f"paragraph2actions/{side}-{split}.txt" for side in ("src", "tgt") for split in PARAGRAPH_SPLITS),
)

# ---------------------------------------------------------------------------------------------------
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


def _unique_molecules(rng: random.Random, count: int) -> list[tuple[str, Chem.Mol]]:
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


# ---------------------------------------------------------------------------------------------------
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
_PATTERNS: dict[str, Chem.Mol] = {}
_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_MULTIPLICITY = {2: "di", 3: "tri", 4: "tetra"}


def _pattern(smarts: str) -> Chem.Mol:
    if smarts not in _PATTERNS:
        _PATTERNS[smarts] = Chem.MolFromSmarts(smarts)
    return _PATTERNS[smarts]


def _matches(mol: Chem.Mol, smarts: str) -> int:
    return len(mol.GetSubstructMatches(_pattern(smarts)))


def _article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _count(number: int, noun: str, plural: str | None = None) -> str:
    word = _NUMBER_WORDS[number] if number < len(_NUMBER_WORDS) else str(number)
    return f"{word} {noun if number == 1 else plural or noun + 's'}"


def _listing(items: list[str]) -> str:
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
        sentences.append(f"It is {_listing([_article(name) for name in others])}.")
    stereo = _stereo_sentence(mol, rng)
    if stereo:
        sentences.append(stereo)
    sentences += _property_sentences(mol, rng)
    return " ".join(sentences)


# ---------------------------------------------------------------------------------------------------
# Reactions: RDKit templates applied to assembled substrates and a partner inventory.

_FREE_AMINE = "[NX3;H2,H1;!$(N[C,S]=[O,N,S]);!$(N[SX4]);!$([N+])]"
_ALIPHATIC_AMINE = "[NX3;H2,H1;!$(N[C,S]=[O,N,S]);!$(N[SX4]);!$([N+]);!$(Na)]"
_CARBONYL = "[CX3;$([CH1](=O)[#6]),$([CH0](=O)([#6])[#6])]"
_ACID = "[CX3](=O)[OX2H1]"
_HYDROXY = "[OX2H1][#6;!$(C=O)]"

_PARTNERS = {
    "acids": ("OC(=O)c1ccccc1", "OC(=O)c1ccc(Cl)cc1", "COc1ccc(C(=O)O)cc1", "OC(=O)CCc1ccccc1",
              "OC(=O)/C=C/c1ccccc1", "OC(=O)c1ccncc1", "OC(=O)C1CCCCC1", "C[C@H](C(=O)O)c1ccccc1",
              "OC(=O)c1cccs1", "C/C=C/C(=O)O", "C[C@H](NC(=O)OC(C)(C)C)C(=O)O", "OC(=O)c1ccc(F)cc1"),
    "amines": ("NCc1ccccc1", "C1CCNCC1", "C1COCCN1", "NC1CC1", "Nc1ccccc1", "CN", "C[C@@H](N)c1ccccc1",
               "CNCc1ccccc1", "CN1CCNCC1", "CC(C)CN", "Nc1ccc(F)cc1", "NCc1ccco1", "C1CCNC1", "COCCN"),
    "alcohols": ("CO", "CCO", "CC(C)O", "OCc1ccccc1", "CC[C@H](C)O", "COCCO", "OC1CCCCC1"),
    "carbonyls": ("O=Cc1ccccc1", "O=Cc1ccc(Cl)cc1", "O=CC1CCCCC1", "O=Cc1ccncc1", "O=Cc1cccs1", "CC(C)C=O",
                  "COc1ccc(C=O)cc1", "O=C1CCCCC1", "O=C1CCN(C(=O)OC(C)(C)C)CC1"),
    "boronic_acids": ("OB(O)c1ccccc1", "OB(O)c1ccc(F)cc1", "COc1ccc(B(O)O)cc1", "OB(O)c1cccnc1",
                      "OB(O)c1ccco1", "Cc1ccc(B(O)O)cc1", "OB(O)c1ccsc1", "OB(O)C1CC1"),
    "acyl_chlorides": ("CC(=O)Cl", "O=C(Cl)c1ccccc1", "O=C(Cl)C1CC1", "CC(C)(C)C(=O)Cl",
                       "COc1ccc(C(=O)Cl)cc1", "O=C(Cl)OCc1ccccc1"),
    "sulfonyl_chlorides": ("Cc1ccc(S(=O)(=O)Cl)cc1", "CS(=O)(=O)Cl", "O=S(=O)(Cl)c1ccccc1", "O=S(=O)(Cl)c1cccs1"),
    "alkyl_halides": ("BrCc1ccccc1", "C=CCBr", "CCOC(=O)CBr", "CI", "CCCCBr", "N#Cc1ccc(CBr)cc1"),
}

# Reagents as written on the left of USPTO reactions (salts as separate ions, as in USPTO-MIT).
_DCM, _DMF, _THF, _MEOH, _ETOH, _WATER = "ClCCl", "CN(C)C=O", "C1CCOC1", "CO", "CCO", "O"
_TEA, _DIPEA = "CCN(CC)CC", "CCN(C(C)C)C(C)C"
_K2CO3 = ("O=C([O-])[O-]", "[K+]", "[K+]")
_PD_PPH3_4 = ("c1ccc([P](c2ccccc2)(c2ccccc2)[Pd]([P](c2ccccc2)(c2ccccc2)c2ccccc2)"
              "([P](c2ccccc2)(c2ccccc2)c2ccccc2)[P](c2ccccc2)(c2ccccc2)c2ccccc2)cc1")


@dataclasses.dataclass(frozen=True)
class _Template:
    """A reaction template: reactant sources, reagent choices, and groups a substrate must not carry."""

    name: str
    smarts: str
    sources: tuple[str, ...]  # "substrates" (assembled molecules) or a key of _PARTNERS, per reactant
    reagent_sets: tuple[tuple[tuple[str, ...], str | None], ...]  # (reagents, SMARTS that rules them out)
    substrate_must_not_have: tuple[str, ...] = ()
    extra_reactants: tuple[str, ...] = ()  # written on the left, not part of the template


_TEMPLATES = (
    _Template("esterification", "[CX3:1](=[O:2])[OX2H1].[OX2H1:3][CX4:4]>>[C:1](=[O:2])[O:3][C:4]",
              ("substrates", "alcohols"),
              ((("O=S(=O)(O)O",), None), (("C1CCC(N=C=NC2CCCCC2)CC1", "CN(C)c1ccncc1", _DCM), None)),
              (_FREE_AMINE, _HYDROXY)),
    _Template("amide coupling", f"[CX3:1](=[O:2])[OX2H1].{_FREE_AMINE[:-1]}:3]>>[C:1](=[O:2])[N:3]",
              ("substrates", "amines"),
              ((("CN(C)C(On1nnc2cccnc21)=[N+](C)C", "F[P-](F)(F)(F)(F)F", _DIPEA, _DMF), None),
               (("CCN=C=NCCCN(C)C", "On1nnc2ccccc21", _TEA, _DCM), None)),
              (_FREE_AMINE,)),
    _Template("amide coupling", f"[CX3:1](=[O:2])[OX2H1].{_FREE_AMINE[:-1]}:3]>>[C:1](=[O:2])[N:3]",
              ("acids", "substrates"),
              ((("CN(C)C(On1nnc2cccnc21)=[N+](C)C", "F[P-](F)(F)(F)(F)F", _DIPEA, _DMF), None),),
              (_ACID,)),
    _Template("acylation", f"[CX3:1](=[O:2])Cl.{_FREE_AMINE[:-1]}:3]>>[C:1](=[O:2])[N:3]",
              ("acyl_chlorides", "substrates"),
              (((_TEA, _DCM), None), (("c1ccncc1",), None)),
              (_HYDROXY, _ACID)),
    _Template("sulfonylation", f"[SX4:1](=[O:2])(=[O:3])Cl.{_FREE_AMINE[:-1]}:4]>>[S:1](=[O:2])(=[O:3])[N:4]",
              ("sulfonyl_chlorides", "substrates"),
              ((("c1ccncc1", _DCM), None), ((_TEA, _DCM), None)),
              (_HYDROXY, _ACID)),
    _Template("Suzuki coupling", "[c:1]Br.[#6:2][BX3]([OX2H1])[OX2H1]>>[c:1]-[#6:2]",
              ("substrates", "boronic_acids"),
              (((_PD_PPH3_4, *_K2CO3, "C1COCCO1", _WATER), None),
               (("CC(=O)[O-]", "CC(=O)[O-]", "[Pd+2]", "c1ccc(P(c2ccccc2)c2ccccc2)cc1", "O=C([O-])[O-]",
                 "[Na+]", "[Na+]", "Cc1ccccc1", _ETOH, _WATER), None)),
              ("[#6][BX3](O)O", "[#6]I")),
    _Template("reductive amination", f"{_CARBONYL[:-1]}:1]=[OX1].{_FREE_AMINE[:-1]}:2]>>[C:1][N:2]",
              ("substrates", "amines"),
              ((("CC(=O)O[BH-](OC(C)=O)OC(C)=O", "[Na+]", "ClCCCl", "CC(=O)O"), None),
               (("[BH3-]C#N", "[Na+]", _MEOH), None)),
              (_FREE_AMINE,)),
    _Template("reductive amination", f"{_CARBONYL[:-1]}:1]=[OX1].{_FREE_AMINE[:-1]}:2]>>[C:1][N:2]",
              ("carbonyls", "substrates"),
              ((("CC(=O)O[BH-](OC(C)=O)OC(C)=O", "[Na+]", "ClCCCl", "CC(=O)O"), None),),
              (_CARBONYL + "=O",)),
    _Template("nitro reduction", "[c:1][N+](=O)[O-]>>[c:1]N",
              ("substrates",),
              ((("[Fe]", "[NH4+]", "[Cl-]", _ETOH, _WATER), None), (("Cl[Sn]Cl", _ETOH), None),
               (("[H][H]", "[Pd]", _MEOH), "[Cl,Br,I,$(C=C),$(C#N),$([CH2]Oc),$([CX3H1]=O)]"))),
    _Template("Boc protection", f"{_ALIPHATIC_AMINE[:-1]}:1]>>[N:1]C(=O)OC(C)(C)C",
              ("substrates",),
              (((_TEA, _DCM), None), (("O=C([O-])O", "[Na+]", _THF, _WATER), None)),
              (),
              ("CC(C)(C)OC(=O)OC(=O)OC(C)(C)C",)),
    _Template("Boc deprotection", "[NX3:1]C(=O)OC(C)(C)C>>[N:1]",
              ("substrates",),
              ((("OC(=O)C(F)(F)F", _DCM), None), (("Cl", "C1COCCO1"), None)),
              ("[#6]C(=O)OC(C)(C)C",)),  # acid would cleave a tert-butyl ester too
    _Template("ester hydrolysis", "[CX3:1](=[O:2])[OX2:3][$([CH3]),$([CH2][CH3])]>>[C:1](=[O:2])[O:3]",
              ("substrates",),
              ((("[Li+]", "[OH-]", _THF, _WATER), None), (("[Na+]", "[OH-]", _MEOH, _WATER), None))),
    _Template("O-alkylation", "[c:1][OX2H1:2].[CX4;!H0:3][Br,I]>>[c:1][O:2][C:3]",
              ("substrates", "alkyl_halides"),
              (((*_K2CO3, _DMF), None), (("O=C([O-])[O-]", "[Cs+]", "[Cs+]", "CC#N"), None)),
              (_FREE_AMINE, _ACID)),
    _Template("carbonyl reduction", f"{_CARBONYL[:-1]}:1]=[OX1:2]>>[C:1][O:2]",
              ("substrates",),
              ((("[BH4-]", "[Na+]", _MEOH), None),)),
)


def _defined_stereo(mol: Chem.Mol) -> int:
    """Stereo elements written in the SMILES: chiral tags and cis/trans double bonds."""
    atoms = sum(a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED for a in mol.GetAtoms())
    bonds = sum(b.GetStereo() != Chem.BondStereo.STEREONONE for b in mol.GetBonds())
    return atoms + bonds


@dataclasses.dataclass
class _PreparedTemplate:
    template: _Template
    reaction: rdChemReactions.ChemicalReaction
    candidates: list[list[tuple[str, Chem.Mol]]]
    ruled_out: list[Chem.Mol | None]


def _prepare(template: _Template, substrates: list[tuple[str, Chem.Mol]]) -> _PreparedTemplate:
    """Each reactant's candidates: molecules that the template matches at exactly one site."""
    reaction = rdChemReactions.ReactionFromSmarts(template.smarts)
    reaction.Initialize()
    forbidden = [_pattern(s) for s in template.substrate_must_not_have]
    candidates = []
    for index, source in enumerate(template.sources):
        query = reaction.GetReactantTemplate(index)
        if source == "substrates":
            pool = [(s, m) for s, m in substrates if not any(m.HasSubstructMatch(f) for f in forbidden)]
        else:
            pool = [(Chem.MolToSmiles(m), m) for m in map(Chem.MolFromSmiles, _PARTNERS[source])]
        candidates.append([(s, m) for s, m in pool if len(m.GetSubstructMatches(query)) == 1])
    ruled_out = [_pattern(s) if s else None for _, s in template.reagent_sets]
    return _PreparedTemplate(template, reaction, candidates, ruled_out)


def _single_product(prepared: _PreparedTemplate, reactants: list[Chem.Mol]) -> str | None:
    """The canonical product when the template gives exactly one valid one, keeping all stereo."""
    products = set()
    with rdBase.BlockLogs():
        for outcome in prepared.reaction.RunReactants(tuple(reactants)):
            try:
                Chem.SanitizeMol(outcome[0])
            except (RuntimeError, ValueError):
                return None
            smiles = Chem.MolToSmiles(outcome[0])
            product = Chem.MolFromSmiles(smiles)
            if product is None or Descriptors.NumRadicalElectrons(product):
                return None
            if _defined_stereo(product) != sum(_defined_stereo(r) for r in reactants):
                return None  # RDKit dropped a cis/trans or chiral label next to the reacting atoms
            products.add(Chem.MolToSmiles(product))
    return products.pop() if len(products) == 1 else None


def _reactions(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """`count` reactions `(left side, product)` with distinct products, in generation order."""
    substrates = _unique_molecules(rng, max(400, 2 * count))
    prepared = [_prepare(t, substrates) for t in _TEMPLATES]
    prepared = [p for p in prepared if all(p.candidates)]
    seen: set[str] = set()
    reactions = []
    for _ in range(max(100, 50 * count)):
        if len(reactions) == count:
            break
        chosen = rng.choice(prepared)
        picked = [rng.choice(candidates) for candidates in chosen.candidates]
        reagent_index = rng.randrange(len(chosen.template.reagent_sets))
        reagents, _ = chosen.template.reagent_sets[reagent_index]
        ruled_out = chosen.ruled_out[reagent_index]
        if ruled_out is not None and any(m.HasSubstructMatch(ruled_out) for _, m in picked):
            continue
        product = _single_product(chosen, [m for _, m in picked])
        if product is None or product in seen:
            continue
        seen.add(product)
        left = [s for s, _ in picked] + list(chosen.template.extra_reactants) + list(reagents)
        rng.shuffle(left)
        reactions.append((".".join(left), product))
    if len(reactions) < count:
        raise ValueError(f"the demo templates gave only {len(reactions)} distinct reactions, {count} asked")
    return reactions


# ---------------------------------------------------------------------------------------------------
# Procedures: an experimental sentence and its action sequence, built side by side.

_STARTING_MATERIALS = (  # (name, SMILES for the molecular weight behind mmol)
    ("4-bromoaniline", "Nc1ccc(Br)cc1"), ("benzaldehyde", "O=Cc1ccccc1"),
    ("methyl 4-hydroxybenzoate", "COC(=O)c1ccc(O)cc1"), ("2-chloropyridine", "Clc1ccccn1"),
    ("4-nitrobenzoic acid", "O=C(O)c1ccc([N+](=O)[O-])cc1"), ("benzylamine", "NCc1ccccc1"),
    ("morpholine", "C1COCCN1"), ("3-bromothiophene", "Brc1ccsc1"), ("phenylboronic acid", "OB(O)c1ccccc1"),
    ("4-fluorobenzoyl chloride", "O=C(Cl)c1ccc(F)cc1"),
    ("tert-butyl piperazine-1-carboxylate", "CC(C)(C)OC(=O)N1CCNCC1"),
    ("cyclohexanone", "O=C1CCCCC1"), ("ethyl bromoacetate", "CCOC(=O)CBr"), ("4-methoxyphenol", "COc1ccc(O)cc1"),
    ("indole", "c1ccc2[nH]ccc2c1"), ("4'-bromoacetophenone", "CC(=O)c1ccc(Br)cc1"),
    ("methyl anthranilate", "COC(=O)c1ccccc1N"), ("4-chlorobenzaldehyde", "O=Cc1ccc(Cl)cc1"),
    ("piperidine", "C1CCNCC1"), ("3-(trifluoromethyl)aniline", "Nc1cccc(C(F)(F)F)c1"),
    ("di-tert-butyl dicarbonate", "CC(C)(C)OC(=O)OC(=O)OC(C)(C)C"), ("sodium borohydride", "[BH4-].[Na+]"),
    ("potassium carbonate", "O=C([O-])[O-].[K+].[K+]"), ("triethylamine", "CCN(CC)CC"),
    ("N,N-diisopropylethylamine", "CCN(C(C)C)C(C)C"), ("acetic anhydride", "CC(=O)OC(C)=O"),
    ("iodomethane", "CI"), ("benzyl bromide", "BrCc1ccccc1"), ("4-(dimethylamino)pyridine", "CN(C)c1ccncc1"),
    ("2-aminopyridine", "Nc1ccccn1"), ("4-chlorophenol", "Oc1ccc(Cl)cc1"), ("methanesulfonyl chloride", "CS(=O)(=O)Cl"),
    ("cesium carbonate", "O=C([O-])[O-].[Cs+].[Cs+]"), ("sodium hydride", "[H-].[Na+]"),
)
_SOLVENTS = ("THF", "DCM", "dichloromethane", "DMF", "ethyl acetate", "methanol", "ethanol", "toluene",
             "1,4-dioxane", "acetonitrile", "water", "diethyl ether", "acetone", "EtOAc", "MeOH")
_EXTRACTION_SOLVENTS = ("ethyl acetate", "EtOAc", "dichloromethane", "DCM", "diethyl ether", "chloroform")
_AQUEOUS = ("water", "brine", "saturated aqueous NaHCO3", "1 M HCl", "saturated aqueous NH4Cl", "10% citric acid")
_QUENCHERS = ("water", "saturated aqueous NH4Cl", "saturated aqueous NaHCO3", "1 N HCl", "methanol")
_DRYING_AGENTS = ("sodium sulfate", "anhydrous sodium sulfate", "magnesium sulfate", "MgSO4", "Na2SO4")
_ACIDS_FOR_PH = ("1 M HCl", "2 N HCl", "acetic acid", "10% citric acid")
_BASES_FOR_PH = ("1 M NaOH", "saturated NaHCO3 solution", "2 N NaOH", "aqueous ammonia")
_GASES = ("nitrogen", "argon")
_TEMPERATURES = ("0 °C", "-78 °C", "room temperature", "rt", "40 °C", "50 °C", "60 °C", "70 °C", "80 °C",
                 "90 °C", "100 °C", "110 °C", "120 °C")
_HOT = ("60 °C", "80 °C", "100 °C", "110 °C", "120 °C", "140 °C", "150 °C")
_COLD = ("0 °C", "-10 °C", "-78 °C", "5 °C")
_DURATIONS = ("10 min", "15 min", "30 min", "45 min", "1 h", "2 h", "3 h", "4 hours", "5 h", "6 h", "12 h",
              "16 h", "18 hours", "24 h", "2 days", "3 days")
_PRODUCTS = ("the title compound", "the desired product", "the product", "N-benzylbenzamide",
             "4-phenylpyridine", "methyl 4-(benzyloxy)benzoate", "tert-butyl 4-benzylpiperazine-1-carboxylate",
             "4-bromo-N-methylaniline", "1-(4-methoxyphenyl)ethanol", "ethyl 2-(4-chlorophenoxy)acetate",
             "4-morpholinobenzonitrile", "2-(piperidin-1-yl)pyridine", "N-(4-bromophenyl)acetamide")
_FORMS = ("white solid", "colorless oil", "yellow solid", "pale yellow oil", "off-white powder", "brown solid")
_PURIFICATIONS = ("column chromatography", "flash chromatography on silica gel",
                  "column chromatography (hexane/ethyl acetate, 3:1)", "preparative HPLC",
                  "flash column chromatography (DCM/MeOH, 95:5)")

_Clause = tuple[str, list[str]]  # (English text, actions)


def _mass_and_moles(rng: random.Random, smiles: str) -> str:
    """`1.20 g, 5.61 mmol` with the mass computed from the molecular weight, as papers write it."""
    mmol = rng.choice((0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 12.0, 20.0, 25.0, 50.0)) * rng.uniform(0.8, 1.25)
    grams = mmol * Descriptors.MolWt(Chem.MolFromSmiles(smiles)) / 1000
    mass = f"{grams * 1000:.0f} mg" if grams < 1 else f"{grams:.2f} g"
    return f"{mass}, {mmol:.2f} mmol"


def _material(rng: random.Random) -> str:
    name, smiles = rng.choice(_STARTING_MATERIALS)
    return f"{name} ({_mass_and_moles(rng, smiles)})"


def _volume(rng: random.Random) -> str:
    return f"{rng.choice((1, 2, 3, 5, 10, 15, 20, 25, 30, 40, 50, 100))} {rng.choice(('mL', 'mL', 'ml'))}"


def _solvent(rng: random.Random) -> str:
    return f"{rng.choice(_SOLVENTS)} ({_volume(rng)})"


def _capitalized(text: str) -> str:
    return text[0].upper() + text[1:]


def _opening(rng: random.Random) -> _Clause:
    """The sentence that sets a reaction up: materials added or dissolved."""
    first, second, solvent = _material(rng), _material(rng), _solvent(rng)
    kind = rng.randrange(4)
    if kind in (0, 2):  # the first material opens the sentence
        first = _capitalized(first)
    if kind == 0:
        text, actions = f"{first} was dissolved in {solvent}", [f"ADD {first}", f"ADD {solvent}"]
        if rng.random() < 0.4:
            temperature = rng.choice(_COLD)
            text += f" and the solution was cooled to {temperature}"
            actions.append(f"SETTEMPERATURE {temperature}")
        return text + ".", actions
    if kind == 1:
        addition = f"ADD {second}"
        text = f"To a {rng.choice(('', 'stirred '))}solution of {first} in {solvent} was added {second}"
        if rng.random() < 0.4:
            text, addition = text + " dropwise", addition + " dropwise"
        if rng.random() < 0.5:
            temperature = rng.choice(_TEMPERATURES)
            text, addition = f"{text} at {temperature}", f"{addition} at {temperature}"
        if rng.random() < 0.4:
            gas = rng.choice(_GASES)
            text, addition = f"{text} under {gas}", f"{addition} under {gas}"
        return text + ".", [f"ADD {first}", f"ADD {solvent}", addition]
    if kind == 2:
        third = _material(rng)
        text = f"{first}, {second} and {third} were combined in {solvent}"
        return text + ".", [f"ADD {first}", f"ADD {second}", f"ADD {third}", f"ADD {solvent}"]
    gas, duration = rng.choice(_GASES), rng.choice(("5 min", "10 min", "15 min", "20 min"))
    text = f"A mixture of {first} and {second} in {solvent} was degassed with {gas} for {duration}"
    return text + ".", [f"ADD {first}", f"ADD {second}", f"ADD {solvent}", f"DEGAS with {gas} for {duration}"]


def _reaction_step(rng: random.Random) -> _Clause:
    """One reaction-phase step; the same numbers go into the text and the action."""
    temperature, duration = rng.choice(_TEMPERATURES), rng.choice(_DURATIONS)
    hot, cold = rng.choice(_HOT), rng.choice(_COLD)
    kind = rng.randrange(11)
    if kind == 0:
        return f"stirred at {temperature} for {duration}", [f"STIR for {duration} at {temperature}"]
    if kind == 1:
        return f"stirred for {duration} at {temperature}", [f"STIR for {duration} at {temperature}"]
    if kind == 2:
        return f"stirred for {duration}", [f"STIR for {duration}"]
    if kind == 3:
        return "stirred overnight at room temperature", ["STIR for overnight at room temperature"]
    if kind == 4:
        return f"heated at reflux for {duration}", [f"REFLUX for {duration}"]
    if kind == 5:
        return f"heated to {hot} and stirred for {duration}", [f"SETTEMPERATURE {hot}", f"STIR for {duration}"]
    if kind == 6:
        minutes = rng.choice(("10 min", "20 min", "30 min", "1 h"))
        return f"irradiated in a microwave reactor at {hot} for {minutes}", [f"MICROWAVE for {minutes} at {hot}"]
    if kind == 7:
        minutes = rng.choice(("5 min", "10 min", "15 min", "30 min"))
        return f"sonicated for {minutes}", [f"SONICATE for {minutes}"]
    if kind == 8:
        temperature = rng.choice(("room temperature", "RT", "0 °C"))
        return f"left to stand at {temperature} for {duration}", [f"WAIT for {duration} at {temperature}"]
    if kind == 9:
        return f"cooled to {cold} and stirred for {duration}", [f"SETTEMPERATURE {cold}", f"STIR for {duration}"]
    first = rng.choice(("10 min", "15 min", "30 min", "1 h"))
    return (f"stirred at {cold} for {first}, allowed to warm to room temperature and stirred for {duration}",
            [f"STIR for {first} at {cold}", "SETTEMPERATURE room temperature", f"STIR for {duration}"])


def _finishing_step(rng: random.Random) -> _Clause:
    kind = rng.randrange(7)
    if kind == 0:
        return rng.choice(("concentrated", "concentrated under reduced pressure", "concentrated in vacuo",
                           "evaporated to dryness")), ["CONCENTRATE"]
    if kind == 1:
        quencher = rng.choice(_QUENCHERS)
        if rng.random() < 0.5:
            quencher = f"{quencher} ({_volume(rng)})"
        return f"quenched with {quencher}", [f"QUENCH with {quencher}"]
    if kind == 2:
        solvent = rng.choice(_EXTRACTION_SOLVENTS + ("water",))
        if rng.random() < 0.5:
            solvent = f"{solvent} ({_volume(rng)})"
        return f"diluted with {solvent}", [f"ADD {solvent}"]
    if kind == 3:
        temperature = rng.choice(("room temperature", "rt"))
        return f"allowed to cool to {temperature}", [f"SETTEMPERATURE {temperature}"]
    if kind == 4:
        return "filtered", ["FILTER keep filtrate"]
    if kind == 5:
        ph = rng.choice(("1", "2", "3", "4", "5", "8", "9", "10"))
        agent = rng.choice(_ACIDS_FOR_PH if int(ph) < 7 else _BASES_FOR_PH)
        return f"adjusted to pH {ph} with {agent}", [f"PH with {agent} to pH {ph}"]
    washes = rng.sample(_AQUEOUS, rng.choice((1, 2)))
    return f"washed with {_listing(washes)}", [f"WASH with {w}" for w in washes]


def _reaction_sentence(rng: random.Random) -> _Clause:
    """`The mixture was <step> and <step>.`: a reaction step, often followed by a finishing step."""
    steps = [_reaction_step(rng)]
    if rng.random() < 0.6:
        steps.append(_finishing_step(rng))
    subject = rng.choice(("The mixture", "The reaction mixture", "The resulting solution", "The suspension"))
    texts = [t for t, _ in steps]
    joiner = ", then " if " and " in texts[0] else rng.choice((" and ", " and then "))
    joined = joiner.join(texts)
    return f"{subject} was {joined}.", [a for _, actions in steps for a in actions]


def _workup_sentence(rng: random.Random) -> _Clause:
    kind = rng.randrange(5)
    if kind == 0:
        solvent, times, volume = rng.choice(_EXTRACTION_SOLVENTS), rng.choice((2, 3, 4)), _volume(rng)
        subject, actions = rng.choice((("The mixture", []), ("The aqueous layer", ["COLLECTLAYER aqueous"])))
        return (f"{subject} was extracted with {solvent} ({times} x {volume}).",
                actions + [f"EXTRACT with {solvent} ({volume}) {times} x"])
    if kind == 1:
        washes = rng.sample(_AQUEOUS, rng.choice((1, 2)))
        agent = rng.choice(_DRYING_AGENTS)
        ending = rng.choice(("concentrated", "concentrated under reduced pressure", "evaporated"))
        return (f"The combined organic layers were washed with {_listing(washes)}, dried over {agent}, "
                f"filtered and {ending}.",
                ["COLLECTLAYER organic", *(f"WASH with {w}" for w in washes), f"DRYSOLUTION over {agent}",
                 "FILTER keep filtrate", "CONCENTRATE"])
    if kind == 2:
        return "The layers were separated.", ["PHASESEPARATION"]
    if kind == 3:
        first, second = rng.sample(_EXTRACTION_SOLVENTS[:3] + ("water", "brine", "1 M HCl"), 2)
        return f"The residue was partitioned between {first} and {second}.", [f"PARTITION with {first} and {second}"]
    agent = rng.choice(_DRYING_AGENTS)
    return f"The organic phase was dried over {agent} and evaporated.", [
        "COLLECTLAYER organic", f"DRYSOLUTION over {agent}", "CONCENTRATE"]


def _isolation_sentence(rng: random.Random) -> _Clause:
    product = rng.choice(_PRODUCTS)
    grams = rng.uniform(0.02, 12.0)
    mass = f"{grams * 1000:.0f} mg" if grams < 1 else f"{grams:.2f} g"
    amount = f"{mass}, {rng.randrange(15, 99)}%" if rng.random() < 0.7 else mass
    verb = rng.choice(("to give", "to afford", "to yield", "to provide"))
    kind = rng.randrange(4)
    if kind == 0:
        method = rng.choice(_PURIFICATIONS)
        form = f" as a {rng.choice(_FORMS)}" if rng.random() < 0.5 else ""
        return (f"The residue was purified by {method} {verb} {product} ({amount}){form}.",
                ["PURIFY", f"YIELD {product} ({amount})"])
    if kind == 1:
        solvent = rng.choice(("water", "cold ethanol", "diethyl ether", "hexane", "cold methanol"))
        drying, drying_action = rng.choice((("dried under vacuum", "DRYSOLID under vacuum"),
                                            ("dried in vacuo", "DRYSOLID under vacuum"),
                                            ("dried at 50 °C under vacuum", "DRYSOLID at 50 °C under vacuum"),
                                            ("dried overnight", "DRYSOLID for overnight")))
        return (f"The precipitate was collected by filtration, washed with {solvent} and {drying} {verb} "
                f"{product} ({amount}).",
                ["FILTER keep precipitate", f"WASH with {solvent}", drying_action, f"YIELD {product} ({amount})"])
    if kind == 2:
        solvent = rng.choice(("ethanol", "methanol", "ethyl acetate/hexane", "isopropanol", "acetonitrile"))
        return (f"The crude product was recrystallized from {solvent} {verb} {product} ({amount}).",
                [f"RECRYSTALLIZE from {solvent}", f"YIELD {product} ({amount})"])
    solvent = rng.choice(("diethyl ether", "pentane", "hexane", "cold methanol"))
    return (f"The solid was triturated with {solvent} and collected by filtration {verb} {product} ({amount}).",
            [f"TRITURATE with {solvent}", "FILTER keep precipitate", f"YIELD {product} ({amount})"])


def _other_sentence(rng: random.Random) -> _Clause:
    kind = rng.randrange(3)
    if kind == 0:
        reference = rng.choice(("Example", "Intermediate", "Step", "Preparation"))
        return (f"The title compound was prepared following the procedure described for {reference} "
                f"{rng.randrange(1, 60)}.", ["FOLLOWOTHERPROCEDURE"])
    if kind == 1:
        return (f"MS (ESI) m/z {rng.uniform(120, 600):.1f} [M+H]+.", ["NOACTION"])
    return (f"The structure was confirmed by 1H NMR ({rng.choice(('CDCl3', 'DMSO-d6', 'CD3OD'))}, "
            f"{rng.choice((300, 400, 500))} MHz).", ["NOACTION"])


_SENTENCE_KINDS = ((_opening, 3), (_reaction_sentence, 4), (_workup_sentence, 3), (_isolation_sentence, 3),
                   (_other_sentence, 1))


def _procedures(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """`count` distinct (sentence, action sequence) pairs."""
    makers = [maker for maker, weight in _SENTENCE_KINDS for _ in range(weight)]
    seen: set[str] = set()
    pairs = []
    for _ in range(max(100, 50 * count)):
        if len(pairs) == count:
            break
        text, actions = rng.choice(makers)(rng)
        if text not in seen:
            seen.add(text)
            pairs.append((text, "; ".join(actions) + "."))
    if len(pairs) < count:
        raise ValueError(f"the demo templates gave only {len(pairs)} distinct procedures, {count} asked")
    return pairs


# ---------------------------------------------------------------------------------------------------
# Writing.


def _split(items: list, names: tuple[str, str, str]) -> dict[str, list]:
    """80/10/10 by position (the items are already in random order); small lists keep a train part."""
    held_out = max(1, round(len(items) / 10)) if len(items) >= 3 else 0
    train_end = len(items) - 2 * held_out
    return {names[0]: items[:train_end], names[1]: items[train_end:train_end + held_out],
            names[2]: items[train_end + held_out:]}


def _write_lines(path: pathlib.Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="\n")


def write_demo_corpus(
    directory: str | os.PathLike,
    *,
    seed: int = 0,
    num_molecules: int = 600,
    num_reactions: int = 600,
    num_procedures: int = 300,
) -> pathlib.Path:
    """Writes the demo corpus (the files in `DEMO_FILES`) under `directory` and returns it.

    The same seed gives byte-identical files; each task draws from its own seeded stream, so changing
    one count leaves the other tasks' files unchanged.
    """
    for name, value in (("num_molecules", num_molecules), ("num_reactions", num_reactions),
                        ("num_procedures", num_procedures)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    root = pathlib.Path(directory)
    with rdBase.BlockLogs():
        molecule_rng = random.Random(f"textchem-demo-molecules-{seed}")
        molecules = _unique_molecules(molecule_rng, num_molecules)
        cids = molecule_rng.sample(range(100_000, 99_999_999), len(molecules))
        rows = [f"{cid}\t{smiles.replace(chr(92), chr(92) * 2)}\t{describe_molecule(mol, molecule_rng)}"
                for cid, (smiles, mol) in zip(cids, molecules)]
        for split, part in _split(rows, CHEBI_SPLITS).items():
            _write_lines(root / "chebi20" / f"{split}.txt", ["CID\tSMILES\tdescription", *part])

        reactions = _reactions(random.Random(f"textchem-demo-reactions-{seed}"), num_reactions)
        for split, part in _split(reactions, USPTO_SPLITS).items():
            _write_lines(root / "uspto_mit" / f"{split}.txt", [f"{left}>>{product}" for left, product in part])

        procedures = _procedures(random.Random(f"textchem-demo-procedures-{seed}"), num_procedures)
    for split, part in _split(procedures, PARAGRAPH_SPLITS).items():
        _write_lines(root / "paragraph2actions" / f"src-{split}.txt", [source for source, _ in part])
        _write_lines(root / "paragraph2actions" / f"tgt-{split}.txt", [target for _, target in part])
    return root


def _cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "textchem_jax"


def demo_data_dir(seed: int = 0) -> pathlib.Path:
    """The default demo corpus, generated once into the user's cache and reused.

    It is written to a temporary sibling and renamed into place, so a reader never sees half a corpus,
    and two processes racing to create it both end with one complete copy.
    """
    target = _cache_root() / f"demo-{seed}-{DEMO_VERSION}"
    if all((target / name).is_file() for name in DEMO_FILES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write_demo_corpus(staging, seed=seed)
        if target.exists():  # an incomplete copy left by an interrupted older version of this code
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not all((target / name).is_file() for name in DEMO_FILES):  # not another process's copy
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
