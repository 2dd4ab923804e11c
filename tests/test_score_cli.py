"""textchem-score: the README's main job on the packaged example, and clear errors for bad files."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "textchem_jax.score"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "exact_match" in result.stdout
