"""TFDS builders prepare offline from the manual folder and give the same examples as the files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from textchem_jax.data import datasets, tfds_builders


def test_build_chebi_and_paragraph2actions_offline(data, tmp_path):
    builder = tfds_builders.build("chebi20", str(data), str(tmp_path))
    assert set(builder.info.splits) == {"validation", "test"}  # the public folder has no train split
    assert builder.info.splits["test"].num_examples == 3300
    from_tfds = tfds_builders.read_tfds("chebi20", "test", str(tmp_path))
    assert from_tfds == datasets.read_dataset("chebi20", "test", str(data))
    records = tfds_builders.tfds_records(str(tmp_path))
    pairs = datasets.task_pairs("text2mol", "test", records=records)
    assert pairs == datasets.task_pairs("text2mol", "test", str(data))

    tfds_builders.build("paragraph2actions", str(data), str(tmp_path))
    assert datasets.task_pairs("paragraph2actions", "train", records=records) == datasets.task_pairs(
        "paragraph2actions", "train", str(data)
    )
    with pytest.raises(FileNotFoundError, match="tfds build"):
        tfds_builders.read_tfds("chebi20", "train", str(tmp_path))


def test_build_reactions_offline(data, tmp_path):
    builder = tfds_builders.build("uspto50k", str(data), str(tmp_path))
    assert builder.info.splits["validation"].num_examples == 5001
    assert tfds_builders.read_tfds("uspto50k", "validation", str(tmp_path)) == datasets.read_dataset("uspto50k", "validation", str(data))


def test_manual_folder_without_the_dataset_names_the_expected_files(tmp_path):
    with pytest.raises(AssertionError, match="chebi20/{train,validation,test}.txt"):  # TFDS: folder missing
        tfds_builders.build("chebi20", str(tmp_path / "manual"), str(tmp_path / "tfds"))
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "notes.txt").write_text("other data")
    with pytest.raises(FileNotFoundError, match=r"chebi20/test\.txt.*blender-nlp/MolT5"):
        tfds_builders.build("chebi20", str(tmp_path / "manual"), str(tmp_path / "tfds"))


def test_build_command_line(data, tmp_path):
    """The documented air-gapped command (no network, no apache-beam), with its `--data_dir=~/...`: the shell
    leaves that `~` alone, so the command expands it (TFDS made a folder named `~` in the working directory)."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "textchem_jax.data.build_tfds", "--datasets=paragraph2actions",
         f"--manual_dir={data}", "--data_dir=~/tensorflow_datasets"],
        capture_output=True, text=True, timeout=600, cwd=work, env={**os.environ, "HOME": str(home)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train: 80" in result.stdout
    assert list(work.iterdir()) == []
    tfds_dir = str(home / "tensorflow_datasets")
    assert tfds_builders.read_tfds("paragraph2actions", "test", tfds_dir)[0].target.endswith(".")
