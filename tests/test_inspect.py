"""textchem-inspect on a user's own SeqIO tasks (decoder-only, without raw text, with their own vocabulary), on a
converted checkpoint's vocabulary, and its flags' and errors' words."""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest
import seqio

from textchem_jax.data import datasets
from textchem_jax.data import vocabulary as vocabularies
from textchem_jax.inspect import feature_lengths
from textchem_jax.inspect import main as inspect_main

LONG_NAME = "my_decoder_only_language_model_task_of_forty"  # 45 characters: the table had room for 33

# T5X-style tasks as a user writes them: their own vocabulary (VOCABULARY_FILE), a decoder-only one, one tokenized
# without raw text copies.
USER_TASKS = """
import functools
import seqio
import tensorflow as tf

V = seqio.SentencePieceVocabulary(VOCABULARY_FILE)


def _pairs(split, shuffle_files=False, seed=None):
    return tf.data.Dataset.from_tensor_slices({"inputs": ["CCO>>CC=O", "CCN"], "targets": ["oxidation", "amine"]})


def _texts(split, shuffle_files=False, seed=None):
    return tf.data.Dataset.from_tensor_slices({"targets": ["CCO", "c1ccccc1CC(=O)OCC"]})


TOKENIZE = [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]
seqio.TaskRegistry.add("LONG_NAME", seqio.FunctionDataSource(_texts, splits=["validation"]), preprocessors=TOKENIZE,
                       output_features={"targets": seqio.Feature(V)})
seqio.TaskRegistry.add("my_nopretok", seqio.FunctionDataSource(_pairs, splits=["validation"]),
                       preprocessors=[functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
                                      seqio.preprocessors.append_eos_after_trim],
                       output_features={"inputs": seqio.Feature(V), "targets": seqio.Feature(V)})
"""


@pytest.fixture
def user_tasks(tmp_path, monkeypatch):
    """The module `my_inspect_tasks` in the working directory, its tasks tokenizing with the shipped vocabulary."""
    source = USER_TASKS.replace("VOCABULARY_FILE", repr(str(vocabularies.DEFAULT_VOCABULARY_PATH)))
    (tmp_path / "my_inspect_tasks.py").write_text(source.replace("LONG_NAME", LONG_NAME))
    monkeypatch.chdir(tmp_path)
    yield "my_inspect_tasks"
    for name in (LONG_NAME, "my_nopretok"):
        if name in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove(name)
    sys.modules.pop("my_inspect_tasks", None)


def test_one_feature_length_keeps_the_default_for_the_other(capsys):
    """`--task_feature_lengths=inputs=10` (or "{'inputs': 10}") crashed with KeyError: 'targets'."""
    assert feature_lengths("inputs=10") == feature_lengths("{'inputs': 10}") == {"inputs": 10, "targets": 512}
    assert inspect_main(["--task=textchem_demo_forward", "--task_feature_lengths=inputs=10", "--max_examples=20"]) == 0
    assert "truncated at {'inputs': 10, 'targets': 512}" in capsys.readouterr().out


def test_decoder_only_and_untexted_user_tasks_are_inspected(user_tasks, capsys):
    """A decoder-only task (only `targets`) crashed with KeyError: 'inputs', a task tokenized with
    copy_pretokenized=False with KeyError: 'inputs_pretokenized'; a 45-character name broke the table's columns;
    percentiles were rounded down (p50 of 3 and 11 ids showed 7, which holds half the examples only at 7.0)."""
    assert inspect_main([f"--task={LONG_NAME}", f"--module_import={user_tasks}", "--num_examples=1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("task "))
    row = next(line for line in lines if line.lstrip().startswith(f"{LONG_NAME} "))
    assert row.index("targets") == header.index("feature"), out  # aligned past the long name
    ids = vocabularies.encode_as_tasks(vocabularies.default_vocabulary(), ["CCO", "c1ccccc1CC(=O)OCC"])
    shortest, longest = sorted(len(i) + 1 for i in ids)  # with their EOS
    p50 = -(-(shortest + longest) // 2)  # the midpoint, rounded up
    assert re.search(rf"{LONG_NAME} +targets +2 +{p50} ", row), row
    assert not any(line.lstrip().startswith(f"{LONG_NAME} ") and "inputs" in line for line in lines)
    assert "    targets: CCO" in out

    assert inspect_main(["--task=my_nopretok", f"--module_import={user_tasks}", "--num_examples=1"]) == 0
    out = capsys.readouterr().out
    assert "inputs (decoded: no raw text): CCO>>CC=O" in out and "targets (decoded: no raw text): oxidation" in out
    assert re.search(r"my_nopretok +inputs +2 ", out) and re.search(r"my_nopretok +targets +2 ", out)


def test_report_names_each_tasks_vocabulary_and_warns_where_vocabulary_does_not_apply(user_tasks, tmp_path, capsys):
    """--vocabulary was silently ignored for a user's task with its own vocabulary, and the report never named
    the vocabulary used."""
    other = vocabularies.train_vocabulary(["CCO is ethanol", "c1ccccc1 is benzene"], tmp_path / "other",
                                          vocab_size=400, hard_vocab_limit=False)  # fmt: skip
    assert inspect_main(["--task=my_nopretok", f"--module_import={user_tasks}", f"--vocabulary={other}",
                         "--num_examples=0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"warning: --vocabulary does not apply to task my_nopretok: it tokenizes with its own " \
           f"{vocabularies.DEFAULT_VOCABULARY_PATH}" in out  # fmt: skip
    assert re.search(rf"\n  my_nopretok +{re.escape(str(vocabularies.DEFAULT_VOCABULARY_PATH))} \(inputs, targets\)", out)
    assert inspect_main(["--task=textchem_demo_forward", f"--vocabulary={other}", "--num_examples=0"]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out and re.search(rf"\n  textchem_demo_forward +{re.escape(other)} \(inputs, targets\)", out)


def test_checkpoint_vocabulary_that_does_not_fit_its_embedding_is_refused(tmp_path, capsys):
    """A Hugging Face folder whose config.json has 500 embedding rows and a 1,100-piece spiece.model was inspected
    without a word (ids up to 998 against 500 rows)."""
    shutil.copy(vocabularies.DEFAULT_VOCABULARY_PATH, tmp_path / "spiece.model")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 500}))
    assert inspect_main(["--task=textchem_demo_forward", f"--vocabulary={tmp_path}", "--num_examples=0"]) == 2
    error = capsys.readouterr().err
    assert "has 1,100 pieces (1,100 to 1,152 embedding rows) but the model's embedding has 500 rows" in error, error
    assert str(tmp_path / "config.json") in error
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 1152}))
    assert inspect_main(["--task=textchem_demo_forward", f"--vocabulary={tmp_path}", "--num_examples=0",
                         "--max_examples=5"]) == 0  # fmt: skip


def test_errors_name_this_commands_flags(tmp_path, monkeypatch, capsys):
    """Without a data folder the hint named --gin.DATA_DIR and --tfds_data_dir, and a missing spiece.model
    --gin.VOCABULARY_PATH: flags textchem-inspect does not have."""
    monkeypatch.delenv("TEXTCHEM_DATA_DIR", raising=False)
    datasets.set_data_dir(None)
    assert inspect_main(["--task=textchem_text2mol"]) == 2
    error = capsys.readouterr().err
    assert "give --data_dir=DIR" in error and "--gin" not in error and "tfds" not in error, error
    assert inspect_main(["--task=textchem_demo_forward", f"--vocabulary={tmp_path / 'moved' / 'spiece.model'}"]) == 2
    error = capsys.readouterr().err
    assert "give --vocabulary an existing .model file" in error and "--gin" not in error, error
    assert inspect_main(["--task=textchem_demo_forward", f"--vocabulary={tmp_path}"]) == 2
    error = capsys.readouterr().err
    assert "give --vocabulary a .model file" in error and "bind VOCABULARY" not in error, error


def test_skipped_rows_are_listed_all_and_once(tmp_path, capsys, caplog):
    """The report cut each kind at 8 lines ("... 4 more") though textchem-inspect is the command that lists them
    all, and the same rows came twice: first as the task's warning, before the `==` header, then in the report."""
    good = "7814\tC1=CC(=CC=C1N)N\tThe molecule is a phenylenediamine.\n"
    rows = [good] * 3 + [f"{i}\tnot_a_smiles((\tThe molecule is broken.\n" for i in range(12)] + ["99\tCCO\n"]
    (tmp_path / "chebi20").mkdir()
    (tmp_path / "chebi20" / "validation.txt").write_text("CID\tSMILES\tdescription\n" + "".join(rows))
    try:
        with caplog.at_level("WARNING"):
            assert inspect_main(["--task=textchem_mol2text", f"--data_dir={tmp_path}", "--num_examples=0"]) == 0
    finally:
        datasets.set_data_dir(None)
    printed = capsys.readouterr().out
    report = printed[printed.index("skipped rows:\n"):]
    assert [int(n) for n in re.findall(r"line (\d+) \(kept\): SMILES does not parse", report)] == list(range(5, 17))
    assert "line 17: expected 3 tab-separated fields, found 2" in report and "more" not in report
    assert "rows skipped or kept with a fault" not in caplog.text and "not_a_smiles" not in caplog.text
