"""The MolT5 / ChEBI-20 evaluation definitions, written out plainly as the reference for parity tests.

One loop, the library calls named in DESIGN §4 (deprecated `AllChem.GetMorganFingerprint` included),
no parallelism, no caching: what the published numbers come from. The metrics benchmark times it too.
"""

from __future__ import annotations

import warnings

import numpy as np
from nltk.translate.bleu_score import corpus_bleu
from rapidfuzz.distance import Levenshtein
from rdkit import Chem, DataStructs, RDLogger
from rdkit.Chem import AllChem, MACCSkeys


def reference_text2mol(targets: list[str], predictions: list[str]) -> dict[str, float]:
    RDLogger.DisableLog("rdApp.*")
    try:
        references, hypotheses, levs = [], [], []
        exact = 0
        valid_pairs = []
        for gt, out in zip(targets, predictions):
            references.append([list(gt)])
            hypotheses.append(list(out))
            try:
                m_out, m_gt = Chem.MolFromSmiles(out), Chem.MolFromSmiles(gt)
                if Chem.MolToInchi(m_out) == Chem.MolToInchi(m_gt):
                    exact += 1
            except Exception:
                pass
            levs.append(Levenshtein.distance(out, gt))
            m_gt, m_out = Chem.MolFromSmiles(gt), Chem.MolFromSmiles(out)
            if m_out is not None:
                valid_pairs.append((m_gt, m_out))
        maccs, rdk, morgan = [], [], []
        for m_gt, m_out in valid_pairs:
            maccs.append(
                DataStructs.FingerprintSimilarity(
                    MACCSkeys.GenMACCSKeys(m_gt), MACCSkeys.GenMACCSKeys(m_out), metric=DataStructs.TanimotoSimilarity
                )
            )
            rdk.append(
                DataStructs.FingerprintSimilarity(
                    Chem.RDKFingerprint(m_gt), Chem.RDKFingerprint(m_out), metric=DataStructs.TanimotoSimilarity
                )
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                morgan.append(
                    DataStructs.TanimotoSimilarity(AllChem.GetMorganFingerprint(m_gt, 2), AllChem.GetMorganFingerprint(m_out, 2))
                )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bleu = corpus_bleu(references, hypotheses)
        n = len(targets)
        return {
            "bleu": bleu,
            "exact_match": exact / n,
            "levenshtein": float(np.mean(levs)),
            "validity": len(valid_pairs) / n,
            "maccs_fts": float(np.mean(maccs)),
            "rdk_fts": float(np.mean(rdk)),
            "morgan_fts": float(np.mean(morgan)),
        }
    finally:
        RDLogger.EnableLog("rdApp.*")
