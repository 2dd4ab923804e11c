"""Procedures of the demo corpus: an experimental sentence and its action sequence, built side by side.

Why a module: the paragraph2actions pairs come from their own templates and vocabulary of
materials, solvents and conditions; building text and actions together keeps every target parseable.
"""

from __future__ import annotations

import random

from rdkit import Chem
from rdkit.Chem import Descriptors

from textchem_jax.data.demo.descriptions import listing


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
    return f"washed with {listing(washes)}", [f"WASH with {w}" for w in washes]


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
        return (f"The combined organic layers were washed with {listing(washes)}, dried over {agent}, "
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


def unique_procedures(rng: random.Random, count: int) -> list[tuple[str, str]]:
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

