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


def test_an_input_file_takes_a_registered_tasks_prompt_and_input_form(tmp_path, caplog):
    """Only the five family names were read: a user's registered task (`my_p2r`, prompt "Suggest reactants for: ")
    was "unknown task", and `retro` silently gave its model the Text+Chem T5 prompt it never saw. Now the task's own
    prompt and input form (here RDKit-canonical) are given, ids as its tokenization makes them; the family name still
    works and says which registered task of its family has another prompt."""
    from textchem_jax.catalogue import CHEMISTRY
    from textchem_jax.chem import canonicalize
    from textchem_jax.data import seqio_tasks
    from textchem_jax.data.vocabulary import encode_as_tasks

    products = ["C(C)O", "OC(=O)C"]  # not canonical: the task's own examples are
    (tmp_path / "products.txt").write_text("".join(f"{product}\n" for product in products))
    name, prompt = "test_infer_own_p2r", "Suggest reactants for: "
    seqio_tasks.register_task(name, "retro", lambda: str(tmp_path), prompt=prompt, canonical=True)
    try:
        assert infer._file_task(name)[0] == name  # its rows are written under its own name
        examples = list(infer._file_examples(str(tmp_path / "products.txt"), name, vocabulary(), 128))
        expected = [prompt + canonicalize(product) for product in products]
        assert expected == [prompt + "CCO", prompt + "CC(=O)O"]
        assert [example["inputs_pretokenized"] for example in examples] == expected
        assert [example["inputs"].tolist() for example in examples] == [
            [*ids.tolist(), 1] for ids in encode_as_tasks(vocabulary(), expected)]  # fmt: skip
        assert all((example["input_domain"] == CHEMISTRY).all() for example in examples)

        assert infer._file_task("retro")[0] == "textchem_retro"  # the family name: as before, and a warning
        infer._warn_of_own_prompts("retro")
        assert f"registered task(s) {name} of this family add their own" in caplog.text
        family = list(infer._file_examples(str(tmp_path / "products.txt"), "retro", vocabulary(), 128))
        assert [example["inputs_pretokenized"] for example in family] == [PROMPTS["retro"] + p for p in products]
    finally:
        seqio.TaskRegistry.remove(name)
        seqio_tasks.SPECS.pop(name, None)
    with pytest.raises(ValueError, match=rf"^unknown task '{name}' \(infer_lib.infer.task\): use one of forward, "):
        infer._file_task(name)
    seqio.TaskRegistry.add(name, source=seqio.FunctionDataSource(lambda split, shuffle_files: None, splits=["test"]),
                           preprocessors=[], output_features={})  # a plain SeqIO task: its prompt is its own code's
    try:
        with pytest.raises(ValueError, match=rf"'{name}' is a SeqIO task or mixture not made by seqio_tasks.register_"):
            infer._file_task(name)
    finally:
        seqio.TaskRegistry.remove(name)
