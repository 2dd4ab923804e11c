"""A small, chemically valid demo corpus for all five Text+Chem T5 tasks, in the real datasets' formats.

Why: the README's main job and the tests need data that exists without a download and loads with the
same readers as ChEBI-20, USPTO-MIT and paragraph2actions. Everything comes from our own inventory
(building blocks, reaction templates, procedure templates), is checked with RDKit, and is
deterministic for a seed: two calls with the same seed write byte-identical files (for one RDKit
version, since canonical SMILES may change between versions).

- ChEBI-20 style molecules are assembled from scaffolds and substituents (`Chem.molzip`); their
  descriptions are computed from the structure (SMARTS-detected classes, rings, stereo, properties),
  so a model can learn both directions.
- Reactions apply RDKit reaction templates (esterification, amide coupling, Suzuki coupling, ...)
  to assembled substrates and a partner inventory; reagents and salts are mixed into the left side.
- Procedure sentences and their action sequences are generated together from templates, so every
  target parses with `parse_actions`.

Modules: `molecules` (assembly), `descriptions`, `reactions`, `procedures`, and `corpus` (the folder
layout, the seeded streams, the cached default corpus).
"""

from textchem_jax.data.demo.corpus import DEMO_FILES, DEMO_VERSION, demo_data_dir, write_demo_corpus
from textchem_jax.data.demo.descriptions import describe_molecule

__all__ = ["DEMO_FILES", "DEMO_VERSION", "demo_data_dir", "describe_molecule", "write_demo_corpus"]
