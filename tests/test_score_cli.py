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


def test_scores_the_packaged_example(tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert main(["--output", str(out)]) == 0
    printed = capsys.readouterr().out
    for task in ("textchem_text2mol", "textchem_mol2text", "textchem_forward", "textchem_retro", "textchem_paragraph2actions"):
        assert task in printed
    results = json.loads(out.read_text())
    assert results["textchem_text2mol"]["validity"] == 0.8  # one of five example predictions is broken
    assert 0 < results["textchem_mol2text"]["rougeL"] < 1


def test_bad_line_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"task": "textchem_forward", "target": "CCO", "prediction": "CCO"}\n{"task": "nope"}\n')
    assert main(["--predictions", str(bad)]) == 2
    assert f"{bad}:2" in capsys.readouterr().err


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
    assert json.loads(results[0].read_text()) == json.loads(results[1].read_text())

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
    assert set(results) == {"textchem_demo_mol2text", "textchem_demo_forward (textchem_demo_forward-000002.jsonl)",
                            "textchem_demo_forward (textchem_demo_forward-000004.jsonl)"}  # fmt: skip
    assert results["textchem_demo_forward (textchem_demo_forward-000004.jsonl)"]["accuracy"] == 1.0
    assert results["textchem_demo_forward (textchem_demo_forward-000002.jsonl)"]["invalid_rate"] == 1.0
    assert results["textchem_demo_mol2text"]["rouge1"] == 0.5  # one of the two rows is right
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--predictions", str(empty)]) == 2
    assert "is a folder without prediction files" in capsys.readouterr().err


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
    assert results == {"textchem_demo_retro": {"accuracy": 1.0, "invalid_rate": 0.0, "roundtrip_accuracy": None},
                       "textchem_demo_retro_notation_kekulized": {"accuracy": 0.0, "invalid_rate": 0.0, "roundtrip_accuracy": None}}  # fmt: skip
    assert re.search(r"textchem_demo_retro_notation_kekulized\n(  \w+ +[\d.]+\n)+  roundtrip_accuracy +n/a\n", captured.out)
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
