"""Chemistry with RDKit: SMILES, canonical forms, reactions, fragment bonds, augmentation."""

from textchem_jax.chem.reactions import (
    Reaction,
    parse_reaction,
    precursors_and_products,
    precursors_and_products_as_written,
    precursors_string,
    remove_atom_maps,
)
from textchem_jax.chem.smiles import (
    COMPONENT_SEPARATOR,
    FRAGMENT_BOND,
    ParsedSmiles,
    canonical_components,
    canonical_fragment,
    canonicalize,
    canonicalize_with_reason,
    inchi,
    inchikey,
    molecule_key,
    parse_smiles,
    randomize_smiles,
    unescape_backslashes,
)

__all__ = [
    "COMPONENT_SEPARATOR",
    "FRAGMENT_BOND",
    "ParsedSmiles",
    "Reaction",
    "canonical_components",
    "canonical_fragment",
    "canonicalize",
    "canonicalize_with_reason",
    "inchi",
    "inchikey",
    "molecule_key",
    "parse_reaction",
    "parse_smiles",
    "precursors_and_products",
    "precursors_and_products_as_written",
    "precursors_string",
    "randomize_smiles",
    "remove_atom_maps",
    "unescape_backslashes",
]
