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
