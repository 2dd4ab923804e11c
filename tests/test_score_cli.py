"""textchem-score: the README's main job on the packaged example, and clear errors for bad files."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from helpers import as_from_a_terminal

from textchem_jax.score import main


META = {"predictions", "examples", "caption_tokenizer", "versions"}  # --output's keys beside the tasks


def test_scores_the_packaged_example(tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert main(["--output", str(out)]) == 0
    printed = capsys.readouterr().out
    for task in ("textchem_text2mol", "textchem_mol2text", "textchem_forward", "textchem_retro", "textchem_paragraph2actions"):
        assert task in printed
    results = json.loads(out.read_text())
    assert results["textchem_text2mol"]["validity"] == 0.8  # one of five example predictions is broken
    assert 0 < results["textchem_mol2text"]["rougeL"] < 1


def test_output_holds_versions_and_example_counts_and_the_table_heads_each_task_with_its_count(tmp_path, capsys):
    """--output wrote the metrics alone: not the library versions the console's last line shows (RDKit's moved
    rdk_fts by 0.005 between releases), nor how many examples each number rests on."""
    import rdkit

    from textchem_jax.metrics.tables import library_versions

    out = tmp_path / "metrics.json"
    assert main(["--output", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    counts = {"textchem_text2mol": 5, "textchem_forward": 4, "textchem_paragraph2actions": 4, "textchem_mol2text": 3,
              "textchem_retro": 3}  # fmt: skip
    assert results["examples"] == counts and set(results) == set(counts) | META
    assert "textchem_text2mol (5 examples)\n" in printed and "textchem_retro (3 examples)\n" in printed
    assert results["versions"] == library_versions()  # one source for the console line and the file
    assert results["versions"]["rdkit"] == rdkit.__version__  # RDKit's own spelling (2026.09.1), not pip's (2026.9.1)
    assert "metric libraries: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) in printed
    assert results["caption_tokenizer"] is None
    assert "caption tokenizer: BERT's basic tokenization (the default" in printed


def test_gt4sd_eval_rows_are_cleaned_as_that_registered_task_cleans_them(tmp_path):
    """T5X infer rows of `textchem_gt4sd_eval_text2mol` (GT4SD's checkpoints write T5's unknown piece where `\\`
    belongs) scored validity 0.33 where the task's own evaluation gives 1.0: textchem-score cleaned them as the
    plain text2mol task does. It now uses the registered task's postprocessor, so both agree."""
    import seqio

    from textchem_jax.run_config import register_our_tasks

    prompt = "Write in SMILES the described molecule: "
    rows = [{"inputs": {"inputs_pretokenized": prompt + "(Z)-but-2-ene", "targets_pretokenized": "C/C=C\\C"},
             "prediction": "C/C=C \u2047 C", "aux": {"scores": -0.1}},
            {"inputs": {"inputs_pretokenized": prompt + "fumaric acid", "targets_pretokenized": "OC(=O)/C=C/C(=O)O"},
             "prediction": "OC(=O)/C=C/C(=O)O", "aux": {"scores": -0.1}},
            {"inputs": {"inputs_pretokenized": prompt + "maleic acid", "targets_pretokenized": "OC(=O)/C=C\\C(=O)O"},
             "prediction": "OC(=O)/C=C<unk>C(=O)O", "aux": {"scores": -0.1}}]  # fmt: skip
    scored = {}
    for task in ("textchem_gt4sd_eval_text2mol", "textchem_text2mol"):
        (tmp_path / f"{task}-predict.jsonl-00000-of-00001").write_text("".join(json.dumps(row) + "\n" for row in rows))
        assert main(["--predictions", str(tmp_path / f"{task}-predict.jsonl-00000-of-00001"), "--output", str(tmp_path / f"{task}.json")]) == 0
        scored[task] = json.loads((tmp_path / f"{task}.json").read_text())[task]
    register_our_tasks()
    registered = seqio.get_mixture_or_task("textchem_gt4sd_eval_text2mol")  # its own evaluation of the same rows
    targets = [registered.postprocess_fn(row["inputs"]["targets_pretokenized"], example={}, is_target=True) for row in rows]
    own = registered.metric_fns[0](targets, [registered.postprocess_fn(row["prediction"]) for row in rows])
    assert scored["textchem_gt4sd_eval_text2mol"] == own and own["validity"] == 1.0 and own["exact_match"] == 1.0
    assert scored["textchem_text2mol"]["validity"] == pytest.approx(1 / 3)  # a plain task reads no unknown piece


def _bert_tokenizer(folder, words):
    """A BERT tokenizer folder (as save_pretrained writes it) of a small word-piece vocabulary."""
    transformers = pytest.importorskip("transformers")
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    return str(folder)


@pytest.mark.needs_hf
def test_caption_tokenizer_flag_scores_captions_with_its_word_pieces_and_says_so(tmp_path, capsys):
    """textchem-eval takes CAPTION_TOKENIZER (SciBERT for MolT5's caption BLEU/METEOR); textchem-score had no way
    to: it scored captions with the default word tokenizer only. A local or gs:// folder, loaded as textchem-eval
    loads it, and named under the table and in --output."""
    import tensorflow as tf

    from textchem_jax.metrics import mol2text_metrics

    folder = _bert_tokenizer(tmp_path / "bert", ["the", "molecule", "is", "a", "benz", "##ene", "."])
    targets, predictions = ["The molecule is a benzene.", "The molecule is a benzene."], ["The molecule is a benzfoo.", "A benzene."]
    rows = tmp_path / "captions.jsonl"
    rows.write_text("".join(json.dumps({"task": "textchem_mol2text", "target": t, "prediction": p}) + "\n"
                            for t, p in zip(targets, predictions)))  # fmt: skip
    remote = f"ram://{tmp_path.name}/bert"  # a remote folder read through tf.io.gfile, as gs:// is
    for name in os.listdir(folder):
        tf.io.gfile.makedirs(remote)
        tf.io.gfile.copy(os.path.join(folder, name), f"{remote}/{name}")
    word_pieces = mol2text_metrics(targets, predictions, tokenizer=folder)
    assert word_pieces["bleu2"] != pytest.approx(mol2text_metrics(targets, predictions)["bleu2"])
    for tokenizer in (folder, remote):
        out = tmp_path / "scores.json"
        assert main(["--predictions", str(rows), "--caption_tokenizer", tokenizer, "--output", str(out)]) == 0
        results = json.loads(out.read_text())
        assert results["textchem_mol2text"] == word_pieces and results["caption_tokenizer"] == tokenizer
        assert f"caption tokenizer: {tokenizer} (word pieces)\nmetric libraries: " in capsys.readouterr().out
    assert main(["--predictions", str(rows), "--caption_tokenizer", str(tmp_path / "missing")]) == 2
    assert f"the caption tokenizer '{tmp_path / 'missing'}' is not a local folder" in capsys.readouterr().err


def test_bad_line_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"task": "textchem_forward", "target": "CCO", "prediction": "CCO"}\n{"task": "nope"}\n')
    assert main(["--predictions", str(bad)]) == 2
    assert f"{bad}:2" in capsys.readouterr().err


def test_in_a_folder_a_task_of_the_users_own_is_skipped_and_said_and_ours_are_scored(tmp_path, capsys, caplog):
    """A run's inference_eval/ holding a task registered by the user's module: the whole folder failed on it."""
    row = {"input": "x", "target": "CCO", "prediction": "CCO"}
    (tmp_path / "my_rxnclass-000010.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "textchem_demo_forward-000010.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "scores.json"
    assert main(["--predictions", str(tmp_path), "--output", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["textchem_demo_forward"]["accuracy"] == 1.0 and "my_rxnclass" not in written
    (tmp_path / "eval" / "inference_eval").mkdir(parents=True)  # textchem-eval's EVAL_OUTPUT_DIR, given as it is
    (tmp_path / "textchem_demo_forward-000010.jsonl").rename(tmp_path / "eval" / "inference_eval" / "textchem_demo_forward-000010.jsonl")
    assert main(["--predictions", str(tmp_path / "eval"), "--output", str(out)]) == 0
    assert json.loads(out.read_text())["textchem_demo_forward"]["accuracy"] == 1.0
    (tmp_path / "eval" / "inference_eval" / "textchem_demo_forward-000010.jsonl").rename(tmp_path / "textchem_demo_forward-000010.jsonl")
    assert written["predictions"] == str(tmp_path) and written["examples"] == {"textchem_demo_forward": 1}
    assert "skipped " + str(tmp_path / "my_rxnclass-000010.jsonl") + ":1: task 'my_rxnclass' is none of ours" in caplog.text
    assert main(["--predictions", str(tmp_path / "my_rxnclass-000010.jsonl")]) == 2  # alone: the error, as before
    assert "evaluate a task of your own with textchem-eval" in capsys.readouterr().err
    (tmp_path / "textchem_demo_forward-000010.jsonl").rename(tmp_path / "my_rxnclass-000020.jsonl")
    assert main(["--predictions", str(tmp_path), "--output", str(tmp_path / "new" / "scores.json")]) == 2
    assert f"{tmp_path} holds no predictions of our tasks (every file skipped, above)" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # nothing scored: the folder made for the output is not left behind


def test_an_empty_file_or_rows_without_targets_are_said_not_scored_as_nothing(tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("\n")
    assert main(["--predictions", str(tmp_path / "empty.jsonl")]) == 2  # printed an empty table, status 0
    assert "holds no predictions (empty)" in capsys.readouterr().err
    t5x_rows = tmp_path / "textchem_mol2text-predict.jsonl-00000-of-00001"  # textchem-infer on a .txt: no targets
    t5x_rows.write_text(json.dumps({"inputs": {"inputs_pretokenized": "Caption the following SMILES: CCO"},
                                    "prediction": "The molecule is ethanol."}) + "\n")  # fmt: skip
    assert main(["--predictions", str(t5x_rows)]) == 2
    assert f"{t5x_rows}:1: no target to score against" in capsys.readouterr().err


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "textchem_jax.score"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "exact_match" in result.stdout
    assert "info: text2mol_metrics: 1 of 5 predictions are not valid SMILES" in result.stderr  # our counts are shown,
    assert "absl" not in result.stderr  # rouge-score's "Using default tokenizer" only with --verbose
    assert "WordNet" not in result.stderr and "INFO" not in result.stderr  # which WordNet: with --verbose


def test_reads_t5x_infer_rows_and_seqio_inference_eval_files(tmp_path, capsys):
    """What t5x.infer writes (raw decoded text, task in the file name) scores like our own rows."""
    prompt = "Predict the product of the following reaction: "
    t5x_rows = [
        {"inputs": {"inputs_pretokenized": prompt + "CC(=O)O.OCC", "targets_pretokenized": "CCOC(C)=O"},
         "prediction": " C C O C ( C ) = O </s>", "aux": {"scores": -0.5}},
        {"inputs": {"inputs_pretokenized": prompt + "CCO.O=C=O", "targets_pretokenized": "CCOC(=O)O"},
         "prediction": "C1CC", "aux": {"scores": -3.0}},
    ]  # fmt: skip
    t5x_file = tmp_path / "textchem_demo_forward-predict.jsonl-00000-of-00001"
    t5x_file.write_text("".join(json.dumps(row) + "\n" for row in t5x_rows))
    ours = tmp_path / "ours.jsonl"
    ours.write_text("".join(json.dumps({"task": "textchem_forward", "target": t, "prediction": p}) + "\n"
                            for t, p in [("CCOC(C)=O", "CCOC(C)=O"), ("CCOC(=O)O", "C1CC")]))  # fmt: skip
    out_t5x, out_ours = tmp_path / "t5x.json", tmp_path / "ours.json"
    assert main(["--predictions", str(t5x_file), "--output", str(out_t5x)]) == 0
    assert main(["--predictions", str(ours), "--output", str(out_ours)]) == 0
    t5x_results, our_results = json.loads(out_t5x.read_text()), json.loads(out_ours.read_text())
    assert t5x_results["textchem_demo_forward"] == our_results["textchem_forward"]
    assert t5x_results["textchem_demo_forward"]["accuracy"] == 0.5 and t5x_results["textchem_demo_forward"]["invalid_rate"] == 0.5

    seqio_file = tmp_path / "textchem_demo_retro-000400.jsonl"  # SeqIO's JSONLogger, as T5X's evaluation writes it
    rows = [{"input": {"inputs_pretokenized": "..."}, "target": {"target": "CC.O", "product": "CCO"}, "prediction": "CC.O"},
            {"input": {"inputs_pretokenized": "..."}, "target": {"target": "CO", "product": "C=O"}, "prediction": "CC"}]  # fmt: skip
    seqio_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(["--predictions", str(seqio_file)]) == 0
    printed = capsys.readouterr().out
    assert "textchem_demo_retro" in printed and "0.5000" in printed and "metric libraries: rdkit" in printed

    nameless = tmp_path / "predictions.jsonl"  # a T5X row without a task in its file name: a clear error
    nameless.write_text(json.dumps(t5x_rows[0]) + "\n")
    assert main(["--predictions", str(nameless)]) == 2
    assert f"{nameless}:1" in capsys.readouterr().err


def test_a_file_saved_on_windows_scores_like_the_plain_file(tmp_path, capsys):
    """A byte-order mark and CRLF line ends (Notepad, Excel) read as the plain file; a line that is not UTF-8
    is an error naming its line, not JSON read from escaped bytes."""
    rows = [{"task": "textchem_forward", "target": "CCO", "prediction": p} for p in ("CCO", "C1CC", "OCC")]
    text = "".join(json.dumps(row) + "\n" for row in rows)
    plain, windows = tmp_path / "plain.jsonl", tmp_path / "windows.jsonl"
    plain.write_text(text)
    windows.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    results = [tmp_path / "plain.json", tmp_path / "windows.json"]
    assert main(["--predictions", str(plain), "--output", str(results[0])]) == 0
    assert main(["--predictions", str(windows), "--output", str(results[1])]) == 0
    plain_scores, windows_scores = (json.loads(path.read_text()) for path in results)
    assert plain_scores.pop("predictions") == str(plain) and windows_scores.pop("predictions") == str(windows)
    assert plain_scores == windows_scores

    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(text.encode() + json.dumps({"task": "textchem_mol2text", "target": "é", "prediction": "x"},
                                                  ensure_ascii=False).encode("latin-1"))  # fmt: skip
    assert main(["--predictions", str(latin1)]) == 2
    assert f"{latin1}:4: not UTF-8 text (byte 0xe9" in capsys.readouterr().err


def test_a_folder_is_scored_file_by_file(tmp_path, capsys):
    """What textchem-infer or t5x.infer writes (one file per task, or per shard of a task, each with its
    .COMPLETED) or a run's inference_eval/ (one file per task and step, and SeqIO's metrics files): one table; a
    task found in several files that are not shards of one inference is shown once per file."""
    def write(name, rows):
        (tmp_path / name).write_text("".join(json.dumps(row) + "\n" for row in rows))

    infer_row = {"inputs": {"inputs_pretokenized": "Caption the following SMILES: CCO", "targets_pretokenized": "ethanol"},
                 "prediction": "ethanol", "aux": {"scores": -0.1}}  # fmt: skip
    for shard, prediction in (("00000-of-00002", "ethanol"), ("00001-of-00002", "methanol")):  # t5x.infer in 2 shards
        write(f"textchem_demo_mol2text-predict.jsonl-{shard}", [{**infer_row, "prediction": prediction}])
        (tmp_path / f"textchem_demo_mol2text-predict.jsonl-{shard}.COMPLETED").write_text("")
    for step, prediction in (("000002", "C1CC"), ("000004", "CCO")):
        write(f"textchem_demo_forward-{step}.jsonl", [{"input": {}, "target": "CCO", "prediction": prediction}])
    write("textchem_demo_forward-metrics.jsonl", [{"step": 4, "accuracy": 1.0}])
    assert main(["--predictions", str(tmp_path), "--output", str(tmp_path / "scores.out")]) == 0
    results = json.loads((tmp_path / "scores.out").read_text())
    assert set(results) - META == {"textchem_demo_mol2text", "textchem_demo_forward (textchem_demo_forward-000002.jsonl)",
                                   "textchem_demo_forward (textchem_demo_forward-000004.jsonl)"}  # fmt: skip
    assert results["examples"] == {"textchem_demo_mol2text": 2, "textchem_demo_forward (textchem_demo_forward-000002.jsonl)": 1,
                                   "textchem_demo_forward (textchem_demo_forward-000004.jsonl)": 1}  # fmt: skip
    assert results["textchem_demo_forward (textchem_demo_forward-000004.jsonl)"]["accuracy"] == 1.0
    assert results["textchem_demo_forward (textchem_demo_forward-000002.jsonl)"]["invalid_rate"] == 1.0
    assert results["textchem_demo_mol2text"]["rouge1"] == 0.5  # one of the two rows is right
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--predictions", str(empty)]) == 2
    assert "is a folder without prediction files" in capsys.readouterr().err


def test_a_warning_of_the_metrics_is_said_once_for_a_folder_of_steps(tmp_path, caplog):
    """A run's inference_eval/ of 16 steps printed the same "retro: roundtrip_accuracy is n/a: ..." 16 times:
    now once, with the number of files it is for; each step still scored."""
    from textchem_jax.score import score

    for step in (2, 4, 6):
        row = {"input": {}, "target": "CC(=O)O.CCO", "prediction": "CC(=O)O.CCO" if step == 6 else "CCO"}
        (tmp_path / f"textchem_demo_retro-{step:06}.jsonl").write_text(json.dumps(row) + "\n")
    caplog.set_level("WARNING")
    results = score(tmp_path)
    accuracy = [results[f"textchem_demo_retro (textchem_demo_retro-{step:06}.jsonl)"]["accuracy"] for step in (2, 4, 6)]
    assert accuracy == [0, 0, 1]
    said = [record.getMessage() for record in caplog.records if "roundtrip_accuracy is n/a" in record.getMessage()]
    assert len(said) == 1 and said[0].endswith("(for 3 prediction files)"), said
    # The metrics' own warnings too (textchem_jax.metrics: a target that does not parse, said for each file)
    for step in (2, 4):
        row = {"input": {}, "target": "C1CC(", "prediction": "CCO"}
        (tmp_path / f"textchem_demo_forward-{step:06}.jsonl").write_text(json.dumps(row) + "\n")
    caplog.clear()
    score(tmp_path)
    said = [record.getMessage() for record in caplog.records if "do not parse" in record.getMessage()]
    assert len(said) == 1 and said[0].endswith("(for 2 prediction files)"), said


def test_a_run_with_notation_evaluations_scores_every_file_and_every_metric_is_there(tmp_path, capsys):
    """A run's inference_eval/ after a NOTATIONS evaluation holds `<task>_notation_<variant>-<step>.jsonl`: it
    stopped the whole folder ("is none of forward, retro, ..."). Round-trip accuracy, which needs a forward model,
    is there as n/a (it was left out), printed n/a and written as JSON's null (it was a bare NaN)."""
    rows = {"textchem_demo_retro-000004.jsonl": "CCO", "textchem_demo_retro_notation_kekulized-000004.jsonl": "C"}
    for name, prediction in rows.items():
        (tmp_path / name).write_text(json.dumps({"input": {}, "target": "CCO", "prediction": prediction}) + "\n")
    output = tmp_path / "new" / "folder" / "scores.json"  # its folder is made before the scoring
    assert main(["--predictions", str(tmp_path), "--output", str(output)]) == 0
    captured = capsys.readouterr()
    results = json.loads(output.read_text(), parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    results = {task: row for task, row in results.items() if task not in META}
    assert results == {"textchem_demo_retro": {"accuracy": 1.0, "invalid_rate": 0.0, "roundtrip_accuracy": None},
                       "textchem_demo_retro_notation_kekulized": {"accuracy": 0.0, "invalid_rate": 0.0, "roundtrip_accuracy": None}}  # fmt: skip
    assert re.search(r"textchem_demo_retro_notation_kekulized \(1 example\)\n(  \w+ +[\d.]+\n)+  roundtrip_accuracy +n/a\n",
                     captured.out)  # fmt: skip
    assert f"Metrics written to {output}" in captured.out


def test_output_into_a_folder_writes_scores_json_there(tmp_path, capsys):
    """--output naming a folder that exists, or a new one ending in '/', gets scores.json inside (writing to the
    folder's own name failed after the scoring), and the run says where the metrics went."""
    (tmp_path / "existing").mkdir()
    for output, written in ((tmp_path / "existing", tmp_path / "existing" / "scores.json"),
                            (f"{tmp_path}/new/", tmp_path / "new" / "scores.json")):  # fmt: skip
        assert main(["--output", str(output)]) == 0
        assert f"Metrics written to {written}" in capsys.readouterr().out
        assert json.loads(written.read_text())["textchem_text2mol"]["validity"] == 0.8


def test_an_output_that_cannot_be_written_keeps_the_earlier_scores_json_and_names_the_file(tmp_path, capsys):
    """--output was truncated, then written: on a full disk textchem-score said "[Errno 28] No space left on device"
    (no path) and left a 0-byte scores.json where the earlier scores had been. Here a file-size limit fails the
    real write."""
    import resource

    out = tmp_path / "scores.json"
    out.write_text('{"earlier": 1}')
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, limit[1]))
        assert main(["--output", str(out)]) == 2
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1].endswith(f": writing {out} failed: File too large")
    assert out.read_text() == '{"earlier": 1}' and sorted(path.name for path in tmp_path.iterdir()) == ["scores.json"]


def test_ctrl_c_ends_in_one_line_and_status_130(tmp_path):
    """Ctrl-C in an argparse command (here textchem-score, waiting on a file still being written) ends as the gin
    commands end: `PROGRAM: interrupted` and status 130; it printed a KeyboardInterrupt traceback."""
    fifo = tmp_path / "textchem_forward.jsonl"
    os.mkfifo(fifo)
    process = subprocess.Popen(as_from_a_terminal([sys.executable, "-m", "textchem_jax.score", "--predictions", str(fifo)]),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while True:  # a writer's non-blocking open succeeds only once the command opened the file to read it
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as error:
            assert error.errno == errno.ENXIO and process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
    time.sleep(0.5)  # reading, blocked: the writer wrote nothing yet
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    os.close(writer)  # whether the read returned at the signal or goes on until the file ends
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1].endswith(": interrupted") and "Traceback" not in err, err


def test_a_ctrl_c_that_lands_in_a_finalizer_still_interrupts_the_command(capsys):
    """Python prints a KeyboardInterrupt raised in a finalizer or gc callback (JAX's `_xla_gc_callback`) as
    "Exception ignored" and drops it: textchem-train ran on to the end and exited 0 (1 of 7 Ctrl-Cs), an export too
    (3 of 7). The command delivers it again once the finalizer is done."""
    from textchem_jax.cli import command

    class InterruptedWhileCollected:
        def __del__(self):
            raise KeyboardInterrupt

    @command
    def main() -> int:
        InterruptedWhileCollected()  # collected at once: its finalizer raises, as a signal landing in it would
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # work the interrupt should end
            time.sleep(0.01)
        return 0

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a worker started from `&` ignores SIGINT
    try:
        assert main() == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert err.strip().endswith(": interrupted") and "Exception ignored" not in err, err


def test_output_on_gcs_prints_no_tensorflow_start_up_lines(tmp_path):
    """--output=gs://.../file.json was looked at (is it a folder?) while argparse read it, before the libraries were
    quieted: TensorFlow, imported for it, printed its C++ start-up lines (cudart_stub, cpu_feature_guard)."""
    import gcs_emulator

    with gcs_emulator.running(tmp_path) as gcs:
        command = [sys.executable, "-m", "textchem_jax.score", f"--output=gs://{gcs_emulator.BUCKET}/one.json"]
        result = subprocess.run(command, env={**os.environ, **gcs}, capture_output=True, text=True, timeout=300)
        stored = gcs_emulator.list_objects(gcs)
    assert result.returncode == 0, result.stderr
    assert not re.search(r"cudart_stub|cpu_feature_guard|InitializeLog|tensorflow/", result.stderr), result.stderr
    assert f"Metrics written to gs://{gcs_emulator.BUCKET}/one.json" in result.stdout and "one.json" in stored


def test_a_local_output_prints_no_tensorflow_start_up_lines(tmp_path):
    """--output=OUT/ on a local folder printed TensorFlow's C++ start-up lines twice, after the table: the libraries
    were quieted for gs:// paths only, and writing the JSON (write_whole, through tf.io.gfile) imported TensorFlow."""
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(json.dumps({"task": "textchem_forward", "input": "CCO.CC(=O)O", "target": "CCOC(C)=O",
                                       "prediction": "CCOC(C)=O"}) + "\n")  # fmt: skip
    command = [sys.executable, "-m", "textchem_jax.score", f"--predictions={predictions}", f"--output={tmp_path}/out/"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert not re.search(r"InitializeLog|oneDNN|cudart_stub|cpu_feature_guard|tensorflow/", result.stderr), result.stderr
    assert (tmp_path / "out" / "scores.json").exists() and f"Metrics written to {tmp_path}/out/scores.json" in result.stdout


def test_a_prediction_that_is_not_text_is_refused_naming_its_line(tmp_path, capsys):
    """`"prediction": 5` or `{"a": 1}` was scored as the text "5" or "{'a': 1}" (the metrics call str() on it)."""
    good = {"task": "textchem_forward", "target": "CCO", "prediction": "CCO"}
    for number, wrong in enumerate((5, {"a": 1}, None, ["CCO", 7]), start=1):
        rows = tmp_path / f"rows{number}.jsonl"
        rows.write_text(json.dumps(good) + "\n" + json.dumps({**good, "prediction": wrong}) + "\n")
        assert main(["--predictions", str(rows)]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"textchem-score: {rows}:2: 'prediction' must be a string (or a list of strings: beams, "
                                f"best first), got {json.dumps(wrong)}"), error  # fmt: skip
    beams = tmp_path / "textchem_demo_forward-molecules.jsonl"  # textchem-infer's own rows: every beam is scored
    beams.write_text(json.dumps({"task": "textchem_demo_forward", "input": "x", "target": "CCO", "prediction": "CCO",
                                 "beams": ["CCO", {"a": 1}]}) + "\n")  # fmt: skip
    assert main(["--predictions", str(beams)]) == 2
    assert f"{beams}:1: 'beams' must be a string" in capsys.readouterr().err


def test_textchem_infer_rows_of_a_txt_input_say_there_is_no_target(tmp_path, capsys):
    """textchem-infer's row_format='textchem' rows of a .txt input (no target) were "expected our row (task, target,
    prediction), T5X's infer row ... ('target')", where T5X's rows of the same input said what to do."""
    rows = tmp_path / "textchem_mol2text-molecules.jsonl"
    rows.write_text(json.dumps({"task": "textchem_mol2text", "input": "Caption the following SMILES: CCO",
                                "prediction": "ethanol", "beams": ["ethanol", "an alcohol"]}) + "\n")  # fmt: skip
    assert main(["--predictions", str(rows)]) == 2
    assert capsys.readouterr().err == (f"textchem-score: {rows}:1: no target to score against: this inference read inputs "
                                       "without targets (a .txt file); give textchem-infer a .jsonl input with 'input' "
                                       "and 'target' to score it\n")  # fmt: skip
