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


@pytest.mark.parametrize(("name", "text", "line", "found", "fix"), [
    ("commas.csv", "input,target\nThe molecule is a steroid ester, a methyl ester and a 3-oxo steroid,CCO\n", 2, 3,
     "quote fields that contain commas"),
    ("short.csv", 'input,target\n"The molecule is an alkane",CC\nThe molecule is an alcohol\n', 3, 1,
     "give every row each column"),
    ("cols.tsv", "input\ttarget\nThe molecule is a steroid\tCCO\textra\n", 2, 3, "remove the tabs inside fields"),
    ("short.tsv", "input\ttarget\nThe molecule is an alkane\tCC\nThe molecule is an alcohol\n", 3, 1,
     "give every row each column"),
])  # fmt: skip
def test_a_csv_or_tsv_row_without_the_headers_fields_is_refused_by_line(tmp_path, name, text, line, found, fix):
    """An unquoted comma in a ChEBI description made its first part the input and its second the target, the real
    target dropped, without a word; a row missing its target was scored as a miss. Now such a row is one error
    naming the file, the line, the field counts and the fix; quoted commas and an empty last column still read."""
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=rf"^{tmp_path / name}:{line}: {found} fields where the header has 2; .*{fix}"):
        list(infer._file_inputs(str(tmp_path / name)))
    (tmp_path / "quoted.csv").write_text('input,target\n"The molecule is a steroid ester, a methyl ester",CCO\nCC,\n')
    assert list(infer._file_inputs(str(tmp_path / "quoted.csv"))) == [
        (2, "The molecule is a steroid ester, a methyl ester", "CCO"), (3, "CC", "")]  # fmt: skip


def test_an_input_that_already_carries_the_prompt_gets_it_once(tmp_path, caplog):
    """"Caption the following SMILES: CCO" (how Hugging Face's Text+Chem T5 is prompted, and our own textchem rows'
    `input` fed back in) became "Caption the following SMILES: Caption the following SMILES: CCO", silently. Now
    the prompt is given once, tokenized as for the bare input, and how many inputs carried it is said."""
    prompt = PROMPTS["mol2text"]
    (tmp_path / "bare.txt").write_text("CCO\nc1ccccc1\nCC(=O)O\n")
    (tmp_path / "prompted.txt").write_text(f"{prompt}CCO\n{prompt.strip()}c1ccccc1\nCC(=O)O\n")
    (tmp_path / "rows.jsonl").write_text(f'{{"input": "{prompt}CCO", "target": "ethanol"}}\n')
    bare = list(infer._file_examples(str(tmp_path / "bare.txt"), "mol2text", vocabulary(), 128))
    assert "already start" not in caplog.text
    prompted = list(infer._file_examples(str(tmp_path / "prompted.txt"), "mol2text", vocabulary(), 128))
    assert [e["inputs_pretokenized"] for e in prompted] == [prompt + m for m in ("CCO", "c1ccccc1", "CC(=O)O")]
    assert [e["inputs"].tolist() for e in prompted] == [e["inputs"].tolist() for e in bare]
    assert f"prompted.txt: 2 of 3 inputs already start with the task's prompt {prompt.strip()!r} (line 1, 2)" in caplog.text
    (row,) = infer._file_examples(str(tmp_path / "rows.jsonl"), "mol2text", vocabulary(), 128)
    assert (row["inputs_pretokenized"], row["targets_pretokenized"]) == (prompt + "CCO", "ethanol")
