"""`textchem-infer`'s inputs and the evaluator's encoded rows carry the ids the registered tasks train and evaluate on:
one tokenization (SeqIO's TF op) for training, evaluation and inference."""

from __future__ import annotations

import numpy as np
import pytest
import seqio

import tasks  # noqa: F401  (registers everything)
from textchem_jax import infer
from textchem_jax.catalogue import PROMPTS
from textchem_jax.data.seqio_tasks import vocabulary
from textchem_jax.evaluator import encode_rows


@pytest.mark.needs_data
def test_infer_and_the_evaluator_tokenize_inputs_as_the_registered_task_does(data, tmp_path, monkeypatch):
    """Python SentencePiece split 87 of the first 1,000 USPTO forward validation inputs otherwise than the tasks' TF
    op ('CC C' against 'C CC'): textchem-infer, the round trip's forward inputs and the robustness embeddings were
    other ids than the model trained on, and infer disagreed with eval on the same text."""
    monkeypatch.setenv("TEXTCHEM_DATA_DIR", str(data))
    task = seqio.get_mixture_or_task("textchem_forward")
    dataset = task.get_dataset(None, split="validation", shuffle=False, use_cached=False)
    rows = list(dataset.take(1000).as_numpy_iterator())
    texts = [row["inputs_pretokenized"].decode() for row in rows]
    expected = [row["inputs"].tolist() for row in rows]
    (tmp_path / "inputs.txt").write_text("".join(f"{text[len(PROMPTS['forward']):]}\n" for text in texts))

    # 300 a chunk: the chunks' seams (300, 600, 900) keep every input's ids and order
    examples = list(infer._file_examples(str(tmp_path / "inputs.txt"), "forward", vocabulary(), 4096, chunk_rows=300))
    assert [example["inputs_pretokenized"] for example in examples] == texts and len(texts) == 1000
    assert [example["inputs"].tolist() for example in examples] == expected

    length = max(map(len, expected))
    padded = np.array([ids + [0] * (length - len(ids)) for ids in expected], np.int32)
    np.testing.assert_array_equal(encode_rows(vocabulary(), texts, length), padded)
