"""Writes the demo corpus folder in the real datasets' formats, and caches the default one.

Why a module: the folder layout (ChEBI-20, USPTO-MIT and paragraph2actions files, 80/10/10 splits),
the seeded streams that make it byte-identical for a seed, and the cache are one job, apart from
what generates the rows.
"""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import tempfile

from textchem_jax.chem.smiles import quiet_rdkit
from textchem_jax.data.demo.descriptions import describe_molecule
from textchem_jax.data.demo.molecules import unique_molecules
from textchem_jax.data.demo.procedures import unique_procedures
from textchem_jax.data.demo.reactions import unique_reactions
from textchem_jax.local_cache import cache_root

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
    root = pathlib.Path(directory)  # local only: the generated demo corpus in this machine's cache
    with quiet_rdkit():
        molecule_rng = random.Random(f"textchem-demo-molecules-{seed}")
        molecules = unique_molecules(molecule_rng, num_molecules)
        cids = molecule_rng.sample(range(100_000, 99_999_999), len(molecules))
        rows = [f"{cid}\t{smiles.replace(chr(92), chr(92) * 2)}\t{describe_molecule(mol, molecule_rng)}"
                for cid, (smiles, mol) in zip(cids, molecules)]
        for split, part in _split(rows, CHEBI_SPLITS).items():
            _write_lines(root / "chebi20" / f"{split}.txt", ["CID\tSMILES\tdescription", *part])

        reactions = unique_reactions(random.Random(f"textchem-demo-reactions-{seed}"), num_reactions)
        for split, part in _split(reactions, USPTO_SPLITS).items():
            _write_lines(root / "uspto_mit" / f"{split}.txt", [f"{left}>>{product}" for left, product in part])

        procedures = unique_procedures(random.Random(f"textchem-demo-procedures-{seed}"), num_procedures)
    for split, part in _split(procedures, PARAGRAPH_SPLITS).items():
        _write_lines(root / "paragraph2actions" / f"src-{split}.txt", [source for source, _ in part])
        _write_lines(root / "paragraph2actions" / f"tgt-{split}.txt", [target for _, target in part])
    return root


def demo_data_dir(seed: int = 0) -> pathlib.Path:
    """The default demo corpus, generated once into the user's cache and reused.

    It is written to a temporary sibling and renamed into place, so a reader never sees half a corpus,
    and two processes racing to create it both end with one complete copy.
    """
    target = cache_root() / f"demo-{seed}-{DEMO_VERSION}"
    if all((target / name).is_file() for name in DEMO_FILES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))  # local only: the generated demo corpus in this machine's cache
    try:
        write_demo_corpus(staging, seed=seed)
        if target.exists():  # an incomplete copy left by an interrupted older version of this code
            shutil.rmtree(target, ignore_errors=True)  # local only: the generated demo corpus in this machine's cache
        try:
            os.rename(staging, target)
        except OSError:
            if not all((target / name).is_file() for name in DEMO_FILES):  # not another process's copy
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)  # local only: the generated demo corpus in this machine's cache
    return target
