"""TFDS builders prepare offline from the manual folder and give the same examples as the files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile

import pytest

from textchem_jax.data import build_tfds, datasets, tfds_builders


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
    with pytest.raises(FileNotFoundError, match=r"--data_dir=.* --datasets=chebi20`"):
        tfds_builders.read_tfds("chebi20", "train", str(tmp_path))


def test_build_reactions_offline(data, tmp_path):
    builder = tfds_builders.build("uspto50k", str(data), str(tmp_path))
    assert builder.info.splits["validation"].num_examples == 5001
    assert tfds_builders.read_tfds("uspto50k", "validation", str(tmp_path)) == datasets.read_dataset("uspto50k", "validation", str(data))


def test_manual_folder_without_the_dataset_names_the_expected_files(tmp_path):
    # TFDS's own AssertionError for a missing or empty folder was some 30 lines of traceback in build_tfds
    with pytest.raises(FileNotFoundError, match=r"chebi20/test\.txt.*blender-nlp/MolT5"):
        tfds_builders.build("chebi20", str(tmp_path / "manual"), str(tmp_path / "tfds"))
    (tmp_path / "manual").mkdir()
    with pytest.raises(FileNotFoundError, match=r"chebi20/test\.txt.*blender-nlp/MolT5"):
        tfds_builders.build("chebi20", str(tmp_path / "manual"), str(tmp_path / "tfds"))
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


def test_a_split_not_prepared_names_the_command_that_prepares_it(tmp_path):
    """It recommended `tfds build --imports=...`, which fails here: TFDS's command imports apache_beam."""
    expected = (f"textchem_chebi20 split 'test' is not prepared in {tmp_path}: run `python -m textchem_jax.data.build_tfds "
                f"--manual_dir=DATA --data_dir={tmp_path} --datasets=chebi20`")  # fmt: skip
    for name in ("chebi20", "textchem_chebi20"):
        with pytest.raises(FileNotFoundError, match=re.escape(expected)):
            tfds_builders.read_tfds(name, "test", str(tmp_path))
    assert "tfds build --" not in tfds_builders.__doc__
    with pytest.raises(ValueError, match="unknown dataset 'chebi': use one of chebi20, uspto_mit, uspto50k, paragraph2actions"):
        tfds_builders.dataset_name("chebi")


def _build_tfds(*flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "textchem_jax.data.build_tfds", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _write_paragraph2actions(folder, sources: list[str], targets: list[str]) -> None:
    (folder / "paragraph2actions").mkdir(parents=True)
    (folder / "paragraph2actions" / "src-test.txt").write_text("".join(f"{line}\n" for line in sources))
    (folder / "paragraph2actions" / "tgt-test.txt").write_text("".join(f"{line}\n" for line in targets))


def test_build_command_takes_the_tfds_names_and_keeps_the_console_ours(tmp_path):
    """`--datasets=textchem_paragraph2actions` (the name the command prints) was a KeyError's traceback, and
    TensorFlow's cudart_stub / cpu_feature_guard lines and TFDS's "Downloading and preparing dataset Unknown size"
    were on the console."""
    _write_paragraph2actions(tmp_path / "manual", ["The mixture was stirred overnight.", "It was filtered."],
                             ["STIR for overnight.", "FILTER keep filtrate."])  # fmt: skip
    tfds_dir = tmp_path / "tfds"
    result = _build_tfds(f"--manual_dir={tmp_path / 'manual'}", f"--data_dir={tfds_dir}", "--datasets=textchem_paragraph2actions")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"textchem_paragraph2actions -> {tfds_dir}/textchem_paragraph2actions/1.0.0 (test: 2)" in result.stdout
    for chatter in ("cudart_stub", "cpu_feature_guard", "absl::InitializeLog", "Traceback"):
        assert chatter not in result.stderr
    assert "Downloading" not in result.stdout and "preparing paragraph2actions from" in result.stdout  # nothing downloads
    assert tfds_builders.read_tfds("textchem_paragraph2actions", "test", str(tfds_dir))[1].target == "FILTER keep filtrate."


def test_build_command_shows_no_tfds_progress_bars_unless_verbose(tmp_path):
    """TFDS's progress bars ("Generating splits...", "Shuffling .../incomplete...tfrecord") filled stderr with over a
    dozen `\\r` lines and took our skipped-rows warning onto one of them; now our lines only, each on its own, and
    the bars come back with --verbose."""
    (tmp_path / "manual" / "uspto50k").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        rows = ["1,US1,CC(=O)O.OCC>>CCOC(C)=O", *(["2,US2,notasmiles"] if split == "train" else [])]
        (tmp_path / "manual" / "uspto50k" / f"{split}.csv").write_text("class,id,rxn_smiles\n" + "\n".join(rows) + "\n")
    command = [sys.executable, "-m", "textchem_jax.data.build_tfds", f"--manual_dir={tmp_path / 'manual'}",
               "--datasets=uspto50k"]  # fmt: skip
    runs = {flag: subprocess.Popen([*command, f"--data_dir={tmp_path / flag.strip('-')}", *([flag] if flag else [])],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for flag in ("", "--verbose")}  # fmt: skip
    (out, err), (_, verbose_err) = (run.communicate(timeout=300) for run in runs.values())
    assert runs[""].returncode == 0 and runs["--verbose"].returncode == 0, err[-3000:] + verbose_err[-3000:]
    assert "\r" not in err and "Generating" not in err and "Shuffling" not in err, err[-3000:]
    assert err.splitlines()[0] == "warning: uspto50k train: skipped or unreadable rows", err[-3000:]
    assert f"textchem_uspto50k -> {tmp_path}/textchem_uspto50k/1.0.0 (train: 1, validation: 1, test: 1)" in out
    assert "Generating splits" in verbose_err and "Shuffling" in verbose_err  # TFDS's own, asked for


def test_build_command_errors_are_one_line(tmp_path, capsys):
    """A bad file, an empty folder or a wrong name ended in a traceback of some 30 lines (DataFormatError, TFDS's
    AssertionError, KeyError): now `build_tfds: <message>` and status 2. One through the real command, the
    others in this process (each command start imports TensorFlow: some 7 s on 2 cores)."""
    _write_paragraph2actions(tmp_path / "unequal", ["One.", "Two.", "Three."], ["STIR."])
    result = _build_tfds(f"--manual_dir={tmp_path / 'unequal'}", f"--data_dir={tmp_path / 'tfds'}", "--datasets=paragraph2actions")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.rstrip("\n").split("\n")[-1].split("\r")[-1]  # after TFDS's progress bars
    assert re.fullmatch(r"build_tfds: \S*src-test\.txt has 3 lines but \S*tgt-test\.txt has 1: the files must be line-aligned", last)

    (tmp_path / "truncated" / "uspto_mit").mkdir(parents=True)
    (tmp_path / "valid.txt").write_text("".join(f"CCO.CC(=O)O>>CCOC(C)=O {i}\n" for i in range(2000)))
    with tarfile.open(tmp_path / "valid.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "valid.txt", arcname="valid.txt")
    whole = (tmp_path / "valid.tar.gz").read_bytes()
    (tmp_path / "truncated" / "uspto_mit" / "valid.txt.tar.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty").mkdir()
    cases = {
        ("truncated", "uspto_mit"): r"\S*valid\.txt\.tar\.gz: not a readable \.tar\.gz archive \(.*\); unpack it or compress it again",
        ("empty", "textchem_uspto50k"): r"uspto50k split 'test' not found: expected \S*/empty/uspto50k/test\.csv\. .*",
        ("missing", "chebi20"): r"chebi20 split 'test' not found: expected \S*/missing/chebi20/test\.txt\. .*",
        ("empty", "chebi20,chebi"): r"unknown dataset 'chebi': use one of chebi20, uspto_mit, uspto50k, paragraph2actions .*",
    }
    for index, ((folder, names), message) in enumerate(cases.items()):
        flags = [f"--manual_dir={tmp_path / folder}", f"--data_dir={tmp_path / f'tfds{index}'}", f"--datasets={names}"]
        assert build_tfds.main(flags) == 2, names
        last = capsys.readouterr().err.rstrip("\n").split("\n")[-1].split("\r")[-1]
        assert re.fullmatch(f"build_tfds: {message}", last), (names, last)
    assert not (tmp_path / "tfds3").exists()  # every name is checked before the first build


def test_a_build_is_made_again_when_the_manual_files_change(tmp_path, caplog):
    """A build was reused whatever the manual folder held later: a split added there was never prepared, and
    read_tfds's "not prepared: run build_tfds" sent the user round in a loop. Now a change rebuilds, said in a warning."""
    manual, tfds_dir = tmp_path / "manual", str(tmp_path / "tfds")
    _write_paragraph2actions(manual, ["The mixture was stirred."], ["STIR."])
    assert set(tfds_builders.build("paragraph2actions", str(manual), tfds_dir).info.splits) == {"test"}
    with caplog.at_level("WARNING", logger="textchem_jax.data"):
        tfds_builders.build("paragraph2actions", str(manual), tfds_dir)  # unchanged: reused, nothing said
    assert "rebuilding" not in caplog.text
    for name, text in (("src-valid.txt", "It was filtered.\n"), ("tgt-valid.txt", "FILTER keep filtrate.\n")):
        (manual / "paragraph2actions" / name).write_text(text)
    with caplog.at_level("WARNING", logger="textchem_jax.data"):
        builder = tfds_builders.build("paragraph2actions", str(manual), tfds_dir)
    assert set(builder.info.splits) == {"validation", "test"}
    assert ("paragraph2actions: rebuilding " in caplog.text and "paragraph2actions/src-valid.txt added, "
            "paragraph2actions/tgt-valid.txt added" in caplog.text)  # fmt: skip
    assert tfds_builders.read_tfds("paragraph2actions", "validation", tfds_dir)[0].target == "FILTER keep filtrate."
    (manual / "paragraph2actions" / "tgt-test.txt").write_text("STIR for 2 h.\n")  # a row changed
    caplog.clear()
    with caplog.at_level("WARNING", logger="textchem_jax.data"):
        tfds_builders.build("paragraph2actions", str(manual), tfds_dir)
    assert "paragraph2actions/tgt-test.txt changed" in caplog.text
    assert tfds_builders.read_tfds("paragraph2actions", "test", tfds_dir)[0].target == "STIR for 2 h."
    (tmp_path / "tfds" / "textchem_paragraph2actions" / "1.0.0" / tfds_builders.MANUAL_FILES).unlink()  # an older build
    caplog.clear()
    with caplog.at_level("WARNING", logger="textchem_jax.data"):
        tfds_builders.build("paragraph2actions", str(manual), tfds_dir)
    assert f"has no {tfds_builders.MANUAL_FILES} naming the manual files it was built from" in caplog.text
