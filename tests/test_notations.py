"""Notation rewrites (`chem.notations`): every rewrite names the same molecule(s), in the promised form."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rdkit import Chem

from textchem_jax.chem.notations import NOTATIONS, rewrite, same_molecule, variants
from textchem_jax.chem.smiles import canonicalize, parse_smiles, unescape_backslashes
from textchem_jax.data import datasets, sources

ALL_NOTATIONS = (*NOTATIONS, "random")
_LABEL = re.compile(r"\[[^\]]*\]|(%\(\d+\)|%\d\d|\d)")  # group 1: a ring-closure label outside brackets


def ring_labels(smiles: str) -> list[str]:
    return [m.group(1) for m in _LABEL.finditer(smiles) if m.group(1)]


def without_labels(smiles: str) -> str:
    return _LABEL.sub(lambda m: "" if m.group(1) else m.group(0), smiles)


def fragment_groups(smiles: str) -> list[list[str | None]]:
    """Canonical SMILES of each fragment, component by component, in written order."""
    return [[canonicalize(f) for f in c.split("~")] for c in unescape_backslashes(smiles).split(".")]


def unsanitized(smiles: str) -> Chem.Mol:
    params = Chem.SmilesParserParams()
    params.removeHs, params.sanitize = False, False
    mol = Chem.MolFromSmiles(smiles.replace("~", "."), params)
    assert mol is not None, smiles
    mol.UpdatePropertyCache(strict=False)
    return mol


def _salt_groups(precursors: str) -> str:
    """USPTO-MIT has no `~`: join the charged components of a precursor set into one fragment group, as the
    Text+Chem T5 format writes salts (`[Na+]~[OH-]`), so that the sample holds atom-mapped `~` groups too."""
    components = precursors.split(".")
    charged = [c for c in components if parse_smiles(c).ok and Chem.GetFormalCharge(parse_smiles(c).mol) != 0]
    if len(charged) < 2:
        return precursors
    first = components.index(charged[0])
    kept = [c for c in components if c not in charged]
    return ".".join([*kept[:first], "~".join(charged), *kept[first:]])


@pytest.fixture(scope="module")
def real_sample(data, chebi_test_rows, uspto50k_reactions) -> dict[str, object]:
    """A few hundred SMILES as stored: ChEBI-20 test molecules (doubled backslashes), atom-mapped USPTO-50K
    test products and USPTO-MIT test precursor sets (with `.`, and `~` salt groups), the GT4SD rows with `~`.
    Strings RDKit itself cannot read are left out and counted."""
    chebi = [row["SMILES"] for row in chebi_test_rows]
    uspto50k = [reaction.split(">")[2] for reaction in uspto50k_reactions]
    precursors = []
    with sources.open_text(datasets.dataset_files("uspto_mit", "test", str(data))[0]) as f:
        for number, line in enumerate(f):
            if number >= 2000:
                break
            precursors.append(line.split()[0].split(">")[0])
    precursors = precursors[::20]
    salts = [s for s in map(_salt_groups, precursors) if "~" in s]
    gt4sd = []
    for split in ("train", "valid", "test"):
        for line in (data / "gt4sd_sample" / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            gt4sd += [s.rpartition(": ")[2] for s in (row["source"], row["target"]) if "~" in s]
    candidates = chebi[::25] + uspto50k[::50] + precursors + salts + gt4sd
    readable = [s for s in candidates if canonicalize(s) is not None]
    return {"smiles": readable, "excluded": len(candidates) - len(readable), "candidates": len(candidates),
            "salts": len(salts), "gt4sd": len(gt4sd)}


@pytest.mark.needs_data
def test_real_sample_is_large_varied_and_readable(real_sample):
    sample = real_sample["smiles"]
    print(f"notation sample: {len(sample)} SMILES, {real_sample['excluded']} of {real_sample['candidates']} excluded as unreadable")
    assert len(sample) >= 300
    assert real_sample["excluded"] <= 0.02 * real_sample["candidates"]
    assert real_sample["salts"] >= 10 and real_sample["gt4sd"] >= 4  # `~` groups from both sources
    assert sum("\\\\" in s for s in sample) >= 5  # ChEBI-20's stored doubled backslashes
    assert sum(":" in s for s in sample) >= 150  # atom maps
    assert sum("@" in s for s in sample) >= 50 and sum("/" in s for s in sample) >= 5
    assert any(s.count(".") >= 3 for s in sample) and sum(bool(ring_labels(s)) for s in sample) >= 200


@pytest.mark.needs_data
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(pick=st.data(), notation=st.sampled_from(ALL_NOTATIONS), seed=st.integers(0, 2**32 - 1))
def test_property_every_notation_names_the_same_molecule(real_sample, pick, notation, seed):
    smiles = pick.draw(st.sampled_from(real_sample["smiles"]))
    out = rewrite(smiles, notation, seed)
    assert canonicalize(out) == canonicalize(smiles), (notation, smiles, out)
    if notation == "random":
        assert rewrite(smiles, notation, seed) == out  # reproducible for a seed
        return
    assert fragment_groups(out) == fragment_groups(smiles)  # components and `~` groups in written order
    if notation == "rings_renumbered":
        text = unescape_backslashes(smiles)
        assert without_labels(out) == without_labels(text)  # only the labels changed
        if ring_labels(text):
            assert out != text
    elif notation == "kekulized":
        mol = unsanitized(out)
        assert not any(a.GetIsAromatic() for a in mol.GetAtoms()) and not any(b.GetIsAromatic() for b in mol.GetBonds())
    elif notation == "explicit_h":
        mol = unsanitized(out)
        assert all(a.GetTotalNumHs() == 0 for a in mol.GetAtoms() if a.GetAtomicNum() != 1)


@pytest.mark.needs_data
def test_explicit_h_keeps_the_stereo_of_every_chebi_test_molecule(chebi_test_rows):
    """All ChEBI-20 test molecules with double-bond stereo: a handful (E ring double bonds) come back with
    the wrong E/Z when the explicit-H SMILES starts from an `[H]`, as RDKit writes it by default."""
    stereo = [row["SMILES"] for row in chebi_test_rows if "/" in row["SMILES"] or "\\" in row["SMILES"]]
    assert len(stereo) > 500
    wrong = [s for s in stereo if canonicalize(rewrite(s, "explicit_h")) != canonicalize(s)]
    assert not wrong, wrong[:3]


def test_kekulized_has_no_aromatic_atoms():
    out = rewrite("c1ccccc1O", "kekulized")
    assert not re.search(r"[a-z]", out) and out.count("=") == 3
    assert same_molecule(out, "c1ccccc1O")


def test_explicit_h_writes_every_hydrogen_as_an_atom():
    out = rewrite("CCO", "explicit_h")
    assert "[H]" in out
    mol = unsanitized(out)
    assert mol.GetNumAtoms() == 9 and sum(a.GetAtomicNum() == 1 for a in mol.GetAtoms()) == 6
    assert same_molecule(out, "CCO")


@pytest.mark.parametrize("smiles", [
    "C1CCCCC/C=C/CCCC1",  # E ring double bond: RDKit misreads `[H]/C1=C(/[H])...` (H-rooted) as Z
    "C1CCCCC/C=C\\CCCC1",
    "C/C=C\\\\C",  # ChEBI-20's doubled backslash
    "[2H]C([2H])([2H])[C@@H](N)C(=O)O",
    "[NH3+:1][C@@H:2](C)C(=O)[O-:3]",
    "[13CH3]C1CC1",
    "C[C@H]1CC[C@@H](O)CC1.[Na+]~[OH-]",
    "[H][H]",
])
@pytest.mark.parametrize("notation", ALL_NOTATIONS)
def test_stereo_isotopes_charges_and_maps_survive(smiles, notation):
    out = rewrite(smiles, notation, seed=5)
    assert canonicalize(out) == canonicalize(smiles) is not None, out


def test_rings_renumbered_changes_every_label():
    smiles = "C1CC2CCC1C2"
    out = rewrite(smiles, "rings_renumbered")
    assert out != smiles and same_molecule(out, smiles)
    assert not set(ring_labels(out)) & {"1", "2"}
    assert without_labels(out) == without_labels(smiles)


def test_rings_renumbered_leaves_bracket_digits_alone():
    assert rewrite("[13CH3]C1CC1", "rings_renumbered") == "[13CH3]C2CC2"
    assert rewrite("[NH3+:12][C@@H:3]1CC1", "rings_renumbered") == "[NH3+:12][C@@H:3]2CC2"


def test_rings_renumbered_reads_and_writes_percent_labels():
    assert rewrite("C%10CC%10", "rings_renumbered") == "C1CC1"
    assert rewrite("C%(123)CC%(123)", "rings_renumbered") == "C1CC1"
    assert rewrite("C%123CC%12C3", "rings_renumbered") == "C12CC1C2"  # `%12` then `3`, not `%1`, `2`, `3`
    crowded = "".join(f"C{label}CC{label}" for label in [*"123456789", "%10"])  # labels 1-10 all taken
    out = rewrite(crowded, "rings_renumbered")
    assert ring_labels(out) == ["%11"] * 20 and same_molecule(out, crowded)


@pytest.mark.parametrize("notation", NOTATIONS)
def test_fragment_bonds_and_components_keep_their_place(notation):
    out = rewrite("[Na+]~[OH-].CC(=O)O", notation)
    assert out.count("~") == 1 and out.count(".") == 1
    assert "~" in out.split(".")[0]
    assert fragment_groups(out) == fragment_groups("[Na+]~[OH-].CC(=O)O")


def test_random_keeps_fragment_groups():
    out = rewrite("[Na+]~[OH-].CC(=O)O", "random", seed=3)
    assert out.count("~") == 1 and out.count(".") == 1
    assert same_molecule(out, "[Na+]~[OH-].CC(=O)O")


@pytest.mark.parametrize("notation", ALL_NOTATIONS)
def test_unreadable_smiles_raise_naming_the_fragment(notation):
    with pytest.raises(ValueError, match=rf"{notation}.*'C1CC'.*(?i:unclosed ring)"):
        rewrite("CCO.[Na+]~C1CC", notation)
    with pytest.raises(ValueError, match="empty SMILES"):
        rewrite("CCO..C", notation)
    with pytest.raises(TypeError, match="not a SMILES string"):
        rewrite(None, notation)


def test_unknown_notation_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown notation 'inchi'.*canonical.*kekulized.*explicit_h.*rings_renumbered.*random"):
        rewrite("CCO", "inchi")


def test_an_unknown_variant_in_an_evaluation_is_an_error_before_any_task_is_registered():
    """NOTATIONS=['bogus'] rewrote nothing (the ValueError was taken for an unreadable input, kept as written) and
    reported 'bogus' as a notation with no drop."""
    import seqio

    from textchem_jax.data import seqio_tasks

    import tasks  # noqa: F401  (registers the demo tasks)

    with pytest.raises(ValueError, match="unknown notation 'kekulised'; known: canonical, kekulized, .*random_0"):
        seqio_tasks.notation_variants("textchem_demo_forward", ["canonical", "kekulised"])
    assert not any(name.endswith("_notation_kekulised") for name in seqio.TaskRegistry.names())
    assert seqio_tasks.notation_variants("textchem_demo_forward", ["random_3"]) == ["textchem_demo_forward_notation_random_3"]


def test_variants_names_every_notation_and_seeds_random_ones():
    smiles = "OC(=O)c1ccccc1O"
    result = variants(smiles, random_variants=3, seed=10)
    assert list(result) == [*NOTATIONS, "random_0", "random_1", "random_2"]
    assert [result[f"random_{i}"] for i in range(3)] == [rewrite(smiles, "random", 10 + i) for i in range(3)]
    assert all(same_molecule(value, smiles) for value in result.values())
    assert list(variants(smiles)) == list(NOTATIONS)


def test_same_molecule():
    assert same_molecule("OCC", "CCO") and same_molecule("[Na+]~[OH-]", "[OH-]~[Na+]")
    assert not same_molecule("CCO", "CCN") and not same_molecule("C1CC", "C1CC") and not same_molecule(None, None)
    assert not same_molecule("F/C=C/F", "F/C=C\\F")
