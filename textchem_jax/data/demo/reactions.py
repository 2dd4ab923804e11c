"""Reactions of the demo corpus: RDKit templates applied to assembled substrates and partner molecules.

Why a module: the templates, the reagent inventory and the checks that a template gives exactly one
product (stereo kept) are what the forward and retro tasks' USPTO-MIT style files come from.
"""

from __future__ import annotations

import dataclasses
import random

from rdkit import Chem
from rdkit.Chem import Descriptors, rdChemReactions

from textchem_jax.chem.smiles import quiet_rdkit
from textchem_jax.data.demo.molecules import smarts_pattern, unique_molecules


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
    forbidden = [smarts_pattern(s) for s in template.substrate_must_not_have]
    candidates = []
    for index, source in enumerate(template.sources):
        query = reaction.GetReactantTemplate(index)
        if source == "substrates":
            pool = [(s, m) for s, m in substrates if not any(m.HasSubstructMatch(f) for f in forbidden)]
        else:
            pool = [(Chem.MolToSmiles(m), m) for m in map(Chem.MolFromSmiles, _PARTNERS[source])]
        candidates.append([(s, m) for s, m in pool if len(m.GetSubstructMatches(query)) == 1])
    ruled_out = [smarts_pattern(s) if s else None for _, s in template.reagent_sets]
    return _PreparedTemplate(template, reaction, candidates, ruled_out)


def _single_product(prepared: _PreparedTemplate, reactants: list[Chem.Mol]) -> str | None:
    """The canonical product when the template gives exactly one valid one, keeping all stereo."""
    products = set()
    with quiet_rdkit():
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


def unique_reactions(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """`count` reactions `(left side, product)` with distinct products, in generation order."""
    substrates = unique_molecules(rng, max(400, 2 * count))
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

