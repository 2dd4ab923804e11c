"""User paths: remote ones untouched, relative ones made absolute for orbax, a `~` the shell left alone expanded."""

from __future__ import annotations

import argparse
import os

from etils import epath

from textchem_jax import cli, paths


def test_absolute_and_remote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.absolute("runs/x") == epath.Path(tmp_path.resolve() / "runs" / "x")
    assert str(paths.absolute("gs://bucket/run")) == "gs://bucket/run"  # not prefixed with the working directory
    assert paths.is_remote("gs://bucket/run") and not paths.is_remote("/tmp/run") and not paths.is_remote("runs/x")
    # gin tries a gs:// gin file under each search path: that joined path is local (it was sent to etils, KeyError)
    assert not paths.is_remote("/work/main/gin_configs/gs://bucket/missing.gin")


def test_commands_expand_a_tilde_the_shell_left_alone(tmp_path, monkeypatch):
    """`--output_dir=~/x` reaches a command as `~/x` (bash expands only `--output_dir ~/x`)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir")
    parser.add_argument("--checkpoint_dir", type=epath.Path)
    parser.add_argument("--input", nargs="+", default=[])
    parser.add_argument("--bucket")
    parser.add_argument("--steps", type=int, default=3)
    args = cli.parse_args(parser, ["--output_dir=~/out", "--checkpoint_dir=~/run", "--input", "~/a.txt", "b.txt",
                                   "--bucket=gs://b/~x"])  # fmt: skip
    assert args.output_dir == os.path.join(str(tmp_path), "out")
    assert args.checkpoint_dir == epath.Path(tmp_path / "run") and isinstance(args.checkpoint_dir, epath.Path)
    assert args.input == [os.path.join(str(tmp_path), "a.txt"), "b.txt"]
    assert args.bucket == "gs://b/~x" and args.steps == 3


def test_a_dotdot_after_a_symlink_is_the_folder_the_shell_means(tmp_path):
    """`link/../runX`, `link` pointing into `real/`: the kernel (os, the lock) climbs from the link's target, while
    tf.io.gfile dropped `link/..` as text. A run wrote its lock and predictions in real/runX, its checkpoints in
    runX, and a reader said an existing run was missing."""
    import tensorflow as tf

    from textchem_jax import launch

    (tmp_path / "real" / "a").mkdir(parents=True)
    (tmp_path / "real" / "runX").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real" / "a")
    given = os.path.join(str(tmp_path), "link", "..", "runX")
    assert os.path.isdir(given) and not tf.io.gfile.isdir(given)  # the two readings of one path
    assert paths.expand_user(given) == str(tmp_path / "real" / "runX") and tf.io.gfile.isdir(paths.expand_user(given))
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir")
    assert cli.parse_args(parser, [f"--model_dir={given}"]).model_dir == str(tmp_path / "real" / "runX")
    assert launch._tilde_expanded(f"MODEL_DIR='{given}'") == f"MODEL_DIR='{tmp_path / 'real' / 'runX'}'"
    assert launch._tilde_expanded("PROMPT='Wait.. then'") == "PROMPT='Wait.. then'"  # not a path segment


def test_gin_search_paths_expand_a_tilde_as_gin_files_do(tmp_path, monkeypatch):
    import gin

    from textchem_jax import launch

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "my gins").mkdir()
    (tmp_path / "my gins" / "mine.gin").write_text("include 'experiments/quickstart.gin'\nBATCH_SIZE = 4\n")
    launch.parse_gin(["mine.gin"], ["MODEL_DIR='~/run'"], ["~/my gins"])  # was: Unable to open file: mine.gin
    assert gin.query_parameter("%BATCH_SIZE") == 4 and gin.query_parameter("%MODEL_DIR") == str(tmp_path / "run")
