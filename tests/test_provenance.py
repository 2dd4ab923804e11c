"""What produced a figure is written beside it and read back by the reports (`textchem_jax.provenance`)."""

from __future__ import annotations

import functools
import html
import json
import pathlib
import subprocess
import sys

from textchem_jax import provenance

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_entries_accumulate_and_name_the_libraries_the_code_and_the_machine(tmp_path):
    provenance.append(str(tmp_path), step=2)
    provenance.append(str(tmp_path), step=4, decoder=provenance.decoder(None))
    first, second = provenance.history(str(tmp_path))
    assert (first["step"], second["step"], second["decoder"]) == (2, 4, "greedy (the model's default)")
    assert {"jax", "flax", "seqio", "tensorflow", "rdkit", "nltk"} <= set(second["versions"])
    assert second["versions"]["jax"] == __import__("jax").__version__
    assert second["python"] == ".".join(map(str, sys.version_info[:3])) and "cores" in second["machine"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: every commit of an editable install has the same package version
        assert second["revision"].removesuffix("+changes") == head.stdout.strip()
    (tmp_path / provenance.FILE).write_text('[{"step": 2}, {"ste')  # a write cut short
    assert provenance.history(str(tmp_path)) == []
    assert provenance.history(str(tmp_path / "none")) == []


def test_changed_versions_are_those_that_differ_from_this_environment():
    now = provenance.versions()
    assert provenance.changed({"rdkit": "2023.9.1", "jax": now["jax"]}) == {"rdkit": ("2023.9.1", now["rdkit"])}


def test_a_decoder_is_named_with_its_bound_settings():
    from textchem_jax.models.beam_search import beam_search

    assert provenance.decoder(functools.partial(beam_search, num_decodes=10)) == (
        "textchem_jax.models.beam_search.beam_search(num_decodes=10)")
    assert provenance.decoder(beam_search) == "textchem_jax.models.beam_search.beam_search"


def test_the_run_report_shows_the_versions_the_run_recorded_beside_its_own_and_marks_each_that_differs(tmp_path):
    """The page listed the versions of the process rendering it, not those that computed the metrics."""
    from textchem_jax import report

    (tmp_path / "config.gin").write_text("MODEL_DIR = 'run'\n")
    assert report.main([str(tmp_path)]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "the run recorded no versions" in page

    entry = provenance.append(str(tmp_path), step=4)
    entry["versions"]["rdkit"] = "2023.9.1"  # metrics computed under another RDKit
    (tmp_path / provenance.FILE).write_text(json.dumps([entry]))
    assert report.main([str(tmp_path)]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "recorded with the run" in page and html.escape(entry["command"]) in page
    rdkit_row = page[page.index("<td>rdkit</td>"):].split("</tr>")[0]
    assert "2023.9.1" in rdkit_row and provenance.versions()["rdkit"] in rdkit_row and "differs" in rdkit_row
    jax_row = page[page.index("<td>jax</td>"):].split("</tr>")[0]
    assert "differs" not in jax_row


def test_config_gin_binds_what_the_environment_chose_and_eval_keeps_a_runs_own(tmp_path, monkeypatch):
    """A run trained on TEXTCHEM_VOCABULARY's vocabulary, rerun from its config.gin alone, trained on the shipped one
    without a word (156 of 160 arrays differed); DATA_DIR = None read TEXTCHEM_DATA_DIR, which the file did not say."""
    import shutil

    import gin

    from textchem_jax import launch
    from textchem_jax.data import vocabulary as vocabularies

    chosen = tmp_path / "chosen.model"
    shutil.copy(vocabularies.DEFAULT_VOCABULARY_PATH, chosen)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEXTCHEM_VOCABULARY", "chosen.model")  # relative: bound absolute, the file read from anywhere
    monkeypatch.setenv("TEXTCHEM_DATA_DIR", "data")
    launch.parse_gin(["experiments/quickstart.gin"], [f"MODEL_DIR={str(tmp_path / 'run')!r}"], [str(ROOT / "gin_configs")])
    launch.write_config(str(tmp_path / "run"), step=0)
    config = (tmp_path / "run" / "config.gin").read_text()
    assert f"vocabularies.task_vocabulary.path = {str(chosen)!r}" in config
    assert f"DATA_DIR = {str(tmp_path / 'data')!r}" in config
    assert provenance.history(str(tmp_path / "run"))[0]["step"] == 0

    monkeypatch.delenv("TEXTCHEM_VOCABULARY")
    monkeypatch.delenv("TEXTCHEM_DATA_DIR")
    launch.parse_gin([str(tmp_path / "run" / "config.gin")], [])
    assert gin.query_parameter("%VOCABULARY").scoped_configurable_fn().sentencepiece_model_file == str(chosen)
    assert gin.query_parameter("%DATA_DIR") == str(tmp_path / "data")

    converted = tmp_path / "converted"  # a textchem-convert output: read by its model.gin once no config.gin is there
    converted.mkdir()
    (converted / "model.gin").write_text("# the model\n")
    launch.write_config(str(converted), keep_a_runs=True, step=0)
    assert not (converted / "config.gin").exists() and provenance.history(str(converted))

    (tmp_path / "run" / "checkpoints").mkdir()  # textchem-eval with EVAL_OUTPUT_DIR = the run's own folder
    launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='elsewhere'"], [str(ROOT / "gin_configs")])
    launch.write_config(str(tmp_path / "run"), keep_a_runs=True, step=2)
    assert (tmp_path / "run" / "config.gin").read_text() == config  # the run's own configuration kept
    assert [entry["step"] for entry in provenance.history(str(tmp_path / "run"))] == [0, 2]
