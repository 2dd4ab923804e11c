"""SeqIO metric functions and postprocessors for the five Text+Chem T5 task families.

Every metric function takes `(targets, predictions)` like SeqIO's `metric_fns` and returns a dict of
floats (fractions in [0, 1], except `levenshtein`, a mean edit distance). Bad predictions (empty,
garbage, non-ASCII, None) never raise: they score as misses and are counted.
"""

from textchem_jax.metrics.actions import paragraph2actions_metrics
from textchem_jax.metrics.captions import mol2text_metrics, word_tokenize
from textchem_jax.metrics.molecules import text2mol_metrics
from textchem_jax.metrics.postprocessors import (
    gt4sd_compatible,
    gt4sd_smiles_postprocessor,
    retro_postprocessor,
    smiles_postprocessor,
    text_postprocessor,
)
from textchem_jax.metrics.reactions import forward_metrics, retro_metrics
from textchem_jax.metrics.settings import MetricSettings, metric_settings
from textchem_jax.metrics.tables import format_table, library_versions, versions_line

__all__ = [
    "MetricSettings",
    "metric_settings",
    "format_table",
    "forward_metrics",
    "mol2text_metrics",
    "paragraph2actions_metrics",
    "retro_metrics",
    "gt4sd_compatible",
    "library_versions",
    "versions_line",
    "gt4sd_smiles_postprocessor",
    "retro_postprocessor",
    "smiles_postprocessor",
    "text2mol_metrics",
    "text_postprocessor",
    "word_tokenize",
]
