"""Text-to-molecule metrics with the MolT5 / ChEBI-20 reference semantics.

The reference (the MolT5 evaluation scripts, which every ChEBI-20 paper quotes) defines:
- `bleu`: NLTK `corpus_bleu` over characters, BLEU-4 weights, no smoothing;
- `levenshtein`: mean edit distance between the raw strings;
- `exact_match`: RDKit InChI of prediction == InChI of target; unparsable predictions are misses;
- `validity`: fraction of predictions for which `Chem.MolFromSmiles` returns a molecule (RDKit reads
  an empty string as an empty molecule, so the reference counts it valid; we keep that for parity;
  one over `chem.smiles.MAX_SMILES_LENGTH` characters is invalid: RDKit would crash scoring it);
- `maccs_fts`, `rdk_fts`, `morgan_fts`: Tanimoto of MACCS keys, `RDKFingerprint`, and Morgan radius-2
  count fingerprints, averaged over the pairs whose prediction parses.
Strings are scored exactly as given, so BLEU and Levenshtein equal the reference on any input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator, rdMolDescriptors

from textchem_jax.chem.smiles import MAX_SMILES_LENGTH, quiet_rdkit
from textchem_jax.metrics._inputs import as_text, check_lengths, logger, top1
from textchem_jax.metrics.bleu import corpus_bleu
from textchem_jax.process_pool import shutdown_pool, start_parallel_map

_MORGAN = None
_MEMO_LIMIT = 20_000  # bounds memory: a ChEBI-20 evaluation needs ~7,000 entries
_memo: dict[str, "_Molecule"] = {}


class _Molecule:
    """One parsed SMILES with its canonical form, InChI and fingerprints computed on first use."""

    __slots__ = ("mol", "_canonical", "_inchi", "_fingerprints")

    def __init__(self, mol: Chem.Mol | None):
        self.mol = mol
        self._canonical = self._inchi = self._fingerprints = None

    @property
    def canonical(self) -> str:
        if self._canonical is None:
            self._canonical = Chem.MolToSmiles(self.mol)
        return self._canonical

    @property
    def inchi(self) -> str | None:
        if self._inchi is None:
            try:
                self._inchi = Chem.MolToInchi(self.mol)
            except Exception:  # the reference counts an InChI failure as a miss
                self._inchi = False
        return self._inchi if self._inchi is not False else None

    @property
    def fingerprints(self) -> tuple:
        if self._fingerprints is None:
            self._fingerprints = (
                rdMolDescriptors.GetMACCSKeysFingerprint(self.mol),
                Chem.RDKFingerprint(self.mol),
                _morgan(self.mol),
            )
        return self._fingerprints


def _morgan(mol: Chem.Mol):
    """Morgan radius 2 sparse count fingerprint: `AllChem.GetMorganFingerprint(m, 2)` semantics."""
    global _MORGAN
    if _MORGAN is None:
        _MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2)
    return _MORGAN.GetSparseCountFingerprint(mol)


def _molecule(smiles: str) -> _Molecule:
    """Parsed molecule, memoized per process: targets recur in every evaluation of a run."""
    molecule = _memo.get(smiles)
    if molecule is None:
        if len(_memo) >= _MEMO_LIMIT:
            _memo.clear()
        with quiet_rdkit():  # over MAX_SMILES_LENGTH: invalid, as RDKit would crash writing or fingerprinting it
            mol = Chem.MolFromSmiles(smiles) if len(smiles) <= MAX_SMILES_LENGTH else None
            molecule = _memo[smiles] = _Molecule(mol)
    return molecule


def score_molecule_pair(pair: tuple[str, str | None]) -> tuple[bool, bool, tuple[float, float, float] | None]:
    """`(valid, exact, (maccs, rdk, morgan) or None)` for one (target, prediction) pair.

    Two molecules with the same canonical SMILES are the same graph, so their InChIs and
    fingerprints are equal: that case is computed once, with the reference's own Tanimoto call.
    """
    target, prediction = pair
    if prediction is None:  # no output at all (the reference would crash): invalid
        return False, False, None
    predicted = _molecule(prediction)
    if predicted.mol is None:
        return False, False, None
    expected = _molecule(target)
    if expected.mol is None:
        return True, False, None
    with quiet_rdkit():
        if prediction == target or predicted.canonical == expected.canonical:
            fingerprints = predicted.fingerprints
            return True, True, tuple(DataStructs.TanimotoSimilarity(f, f) for f in fingerprints)
        exact = predicted.inchi is not None and predicted.inchi == expected.inchi
        pairs = zip(expected.fingerprints, predicted.fingerprints)
        return True, exact, tuple(DataStructs.TanimotoSimilarity(a, b) for a, b in pairs)


def text2mol_metrics(targets: Sequence, predictions: Sequence, *, num_workers: int | None = None) -> dict[str, float]:
    """SeqIO metric function for description -> SMILES (keys and semantics: module docstring).

    `predictions` may hold lists of beams (best first); the first is scored. RDKit work runs over
    `num_workers` processes (default: all cores); identical pairs are scored once.
    """
    check_lengths(targets, predictions, "text2mol_metrics")
    targets = [as_text(t) for t in targets]
    raw_predictions = [top1(p) for p in predictions]
    predictions = [as_text(p) for p in raw_predictions]
    n = len(targets)
    if n == 0:
        raise ValueError("text2mol_metrics: no examples to score")
    molecule_pairs = [(t, None if r is None else p) for t, r, p in zip(targets, raw_predictions, predictions)]
    unique_pairs = list(dict.fromkeys(molecule_pairs))
    with start_parallel_map(score_molecule_pair, unique_pairs, num_workers) as collect:
        bleu = corpus_bleu(targets, predictions)  # per character; runs here while the workers do RDKit
        levenshtein = sum(Levenshtein.distance(t, p) for t, p in zip(targets, predictions)) / n
        scores = dict(zip(unique_pairs, collect()))
    per_pair = [scores[pair] for pair in molecule_pairs]

    valid = sum(s[0] for s in per_pair)
    similarities = [s[2] for s in per_pair if s[2] is not None]
    unreadable_targets = sum(1 for s in per_pair if s[0] and s[2] is None)
    if valid < n:
        logger.info("text2mol_metrics: %d of %d predictions are not valid SMILES", n - valid, n)
    if unreadable_targets:
        logger.warning("text2mol_metrics: %d targets do not parse; their pairs have no fingerprint score", unreadable_targets)

    def mean_similarity(index: int) -> float:
        return sum(s[index] for s in similarities) / len(similarities) if similarities else math.nan

    return {
        "bleu": bleu,
        "exact_match": sum(s[1] for s in per_pair) / n,
        "levenshtein": levenshtein,
        "validity": valid / n,
        "maccs_fts": mean_similarity(0),
        "rdk_fts": mean_similarity(1),
        "morgan_fts": mean_similarity(2),
    }


def clear_molecule_cache() -> None:
    """Forgets memoized molecules here and in the worker pool (for cold-start measurements)."""
    _memo.clear()
    shutdown_pool()
