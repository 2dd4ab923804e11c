"""Every shipped gin config parses, binds its REQUIRED macros, and builds its model; e2-CLM trains from gin."""

from __future__ import annotations

import ast
import os
import pathlib
import re
import shutil
import subprocess
import sys

import gin
import jax
import numpy as np
import pytest

import optax

import tasks  # noqa: F401  (registers the demo tasks the inference test evaluates)
from helpers import ROOT, demo_batch, tiny_e2clm
from textchem_jax import launch, partitioning
from textchem_jax import trainer as trainer_lib
from textchem_jax.data.vocabulary import DEFAULT_VOCABULARY_PATH
from textchem_jax.models.adapters import E2ClmModel, EncoderDecoderModel

CONFIGS = pathlib.Path(launch.GIN_CONFIGS)
EXPERIMENTS = sorted(p.relative_to(CONFIGS).as_posix() for p in (CONFIGS / "experiments").glob("*.gin"))


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_parses_and_builds_its_model(experiment, tmp_path):
    required = launch._required_macros(launch.gin_sources([experiment], [str(CONFIGS)]))
    paths = []
    for macro in required:
        if macro.endswith(("_DIR", "_CHECKPOINT", "_PATH")):  # a checkpoint folder bringing its vocabulary
            (tmp_path / macro.lower()).mkdir()
            shutil.copyfile(DEFAULT_VOCABULARY_PATH, tmp_path / macro.lower() / "spiece.model")
            paths.append(f"{macro}='{tmp_path / macro.lower()}'")
    launch.parse_gin([experiment], paths)
    from textchem_jax import train as train_lib

    assert gin.query_parameter("train_lib.train.model_dir") is not None
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    assert isinstance(model, EncoderDecoderModel)  # a model adapter (E2ClmModel is one too)
    assert model.abstract_params() and train_lib.train is not None
    # The run is built from objects: scoped dataset configs, a checkpoint config and an optax OPTIMIZER.
    assert gin.query_parameter("train/run_config.DatasetConfig.split") == "train"
    assert gin.query_parameter("infer_eval/run_config.DatasetConfig.pack") is False
    optimizer = gin.query_parameter("%OPTIMIZER").scoped_configurable_fn()
    assert isinstance(optimizer, optax.GradientTransformation)


@pytest.mark.parametrize("run", ["runs/eval.gin", "runs/infer.gin"])
def test_run_configs_with_a_model(run, tmp_path):
    output = "EVAL_OUTPUT_DIR" if run == "runs/eval.gin" else "INFER_OUTPUT_DIR"  # the other one is no macro of its file
    launch.parse_gin(["models/t5_tiny.gin", run], [f"CHECKPOINT_PATH='{tmp_path}'", f"{output}='{tmp_path}'",
                                                   "MIXTURE_OR_TASK_NAME='textchem_demo'",
                                                   "TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}"])  # fmt: skip


def test_wrong_include_order_or_missing_file_is_explained():
    with pytest.raises(launch.ConfigError, match="gin_search_paths"):
        launch.parse_gin(["experiments/no_such.gin"], [])
    with pytest.raises(launch.ConfigError, match="macro MODEL is used but never defined.*models/t5_small.gin"):
        launch.parse_gin(["runs/pretrain.gin"], ["MODEL_DIR='/tmp/x'", "MIXTURE_OR_TASK_NAME='textchem_demo'",
                                                 "TASK_FEATURE_LENGTHS={}", "TRAIN_STEPS=1"])  # fmt: skip
    with pytest.raises(launch.ConfigError, match=r"TRAIN_STEPS is required .*runs/pretrain.gin.*--gin\.TRAIN_STEPS=1000,"):
        launch.parse_gin(["models/t5_tiny.gin", "runs/pretrain.gin"],
                         ["MODEL_DIR='/tmp/x'", "MIXTURE_OR_TASK_NAME='textchem_demo'", "TASK_FEATURE_LENGTHS={}"])  # fmt: skip


def test_command_line_bindings_use_what_the_gin_files_import():
    """gin's imports are per file: `--gin.OPTIMIZER=@optax.adafactor()` (T5X's default optimizer) found no
    configurable, since no file referenced `optax.adafactor`. The files' imports now serve the bindings."""
    launch.parse_gin(["experiments/quickstart.gin"], [
        "MODEL_DIR='/tmp/x'", "OPTIMIZER=@optax.adafactor()", "optax.adafactor.learning_rate=1e-3",
        "VOCABULARY=@vocabularies.load_vocabulary()", f"vocabularies.load_vocabulary.path='{DEFAULT_VOCABULARY_PATH}'",
    ])  # fmt: skip
    optimizer = gin.query_parameter("%OPTIMIZER").scoped_configurable_fn()
    assert isinstance(optimizer, optax.GradientTransformation)
    assert gin.query_parameter("optax.adafactor.learning_rate") == 1e-3
    vocabulary = gin.query_parameter("%VOCABULARY").scoped_configurable_fn()
    assert vocabulary.sentencepiece_model_file == str(DEFAULT_VOCABULARY_PATH)
    gin.clear_config()
    # errors still name the user's own binding line (the import lines before it are not counted)
    with pytest.raises(launch.ConfigError, match=r"(?s)optax\.adamx.*In bindings string line 2\n +OPTIMIZER=@optax\.adamx"):
        launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'", "OPTIMIZER=@optax.adamx()"])
    gin.clear_config()
    # a macro bound to itself (found by fuzzing: the type check followed it forever)
    with pytest.raises(launch.ConfigError, match=r"circle \(NUM_PARTITIONS -> NUM_PARTITIONS\)"):
        launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'", "NUM_PARTITIONS = %NUM_PARTITIONS"])


@pytest.mark.parametrize("bindings, rates", [
    ([], [3e-3, 3e-3, 3e-3]),  # the quickstart's LEARNING_RATE_SCHEDULE, which its adamw uses
    (["OPTIMIZER = @optax.sgd()", "optax.sgd.learning_rate = 0.5"], [0.5, 0.5, 0.5]),
    (["optax.adamw.learning_rate = @optax.linear_schedule()", "optax.linear_schedule.init_value = 0.0",
      "optax.linear_schedule.end_value = 1e-2", "optax.linear_schedule.transition_steps = 2"], [0.0, 5e-3, 1e-2]),
    (["OPTIMIZER = @optax.sgd()", "optax.sgd.learning_rate = 0.5", "trainer.Trainer.learning_rate_fn = 0.25"], [0.25] * 3),
    (["OPTIMIZER = @optax.identity()"], None),  # no rate of its own to log: `lr n/a`
    # the shorthand schedule trained at its own default 6e-4 whatever LEARNING_RATE said
    (["LEARNING_RATE_SCHEDULE = @trainer.learning_rate_schedule()", "trainer.learning_rate_schedule.name = 'rsqrt'",
      "trainer.learning_rate_schedule.warmup_steps = 4", "LEARNING_RATE = 0.5"], [0.25] * 3),
])  # fmt: skip
def test_the_logged_learning_rate_is_the_one_the_optimizer_uses(bindings, rates):
    """An OPTIMIZER given its own learning_rate (as the error for a bare `@optax.sgd()` tells) or schedule
    logged the quickstart's 3e-3 it did not use, on the console and in TensorBoard."""
    launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'", *bindings])
    logged = gin.query_parameter("trainer.Trainer.learning_rate_fn")
    if rates is None:
        assert logged is None
    else:
        logged = logged.scoped_configurable_fn() if isinstance(logged, gin.config.ConfigurableReference) else logged
        assert [float(logged(step)) if callable(logged) else logged for step in range(3)] == pytest.approx(rates)
    gin.clear_config()


@pytest.mark.parametrize("variant", ["a", "b"])
def test_e2clm_variants_a_and_b_read_with_the_text_checkpoints_vocabulary(tmp_path, variant):
    """Run as their comments say (TEXT_ENCODER_CHECKPOINT a t5-small import), variants A and B tokenized with the
    demo vocabulary: a 32,128-row embedding refused, and its fix led to a second error. A checkpoint without one
    is one error, not ending "bind VOCABULARY yourself in scope 'VOCABULARY'"."""
    (tmp_path / "text").mkdir()
    shutil.copy(DEFAULT_VOCABULARY_PATH, tmp_path / "text" / "spiece.model")
    (tmp_path / "bare").mkdir()
    for text, expected in ((tmp_path / "text", f"{tmp_path / 'text'}/spiece.model"), (tmp_path / "bare", None)):
        launch.parse_gin([f"experiments/e2clm_small_variant_{variant}_augm.gin"], [
            "MODEL_DIR='/tmp/x'", f"TEXT_ENCODER_CHECKPOINT='{text}'", "CHEMISTRY_ENCODER_CHECKPOINT='/tmp/chemistry'"])  # fmt: skip
        if expected:
            assert gin.query_parameter("%VOCABULARY").scoped_configurable_fn().sentencepiece_model_file == expected
        else:
            with pytest.raises(FileNotFoundError) as error:
                gin.query_parameter("%MODEL").scoped_configurable_fn()
            assert launch.without_gin_context(error.value).endswith("or bind VOCABULARY yourself"), str(error.value)
        gin.clear_config()


def test_the_data_dir_macro_is_where_our_tasks_read(tmp_path):
    """DESIGN's "TEXTCHEM_DATA_DIR (or a gin macro)": the errors named a DATA_DIR macro that no gin file had."""
    import os

    command = [sys.executable, "-m", "textchem_jax.train", "--gin_file=experiments/quickstart.gin",
               f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.MIXTURE_OR_TASK_NAME='textchem_text2mol'",
               f"--gin.DATA_DIR='{tmp_path / 'data'}'", "--gin.TRAIN_STEPS=1"]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "TEXTCHEM_DATA_DIR"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 2 and f"expected {tmp_path / 'data'}/chebi20/train.txt" in result.stderr, result.stderr[-2000:]


def test_a_misspelt_parameter_is_answered_with_the_names_it_may_mean():
    """gin said only "Configurable 'train_lib.train' doesn't have a parameter named 'log_perod'"; misspelt macros and
    task names already got the names they may mean."""
    for binding, wrong, meant in (("train_lib.train.log_perod=10", "log_perod", "log_period"),
                                  ("run_config.CheckpointConfig.periodd=10", "periodd", "period")):  # fmt: skip
        with pytest.raises(launch.ConfigError, match=rf"(?s)doesn't have a parameter named '{wrong}'.*\nFix: did you mean {meant}( or \w+)?\?$"):
            launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'", binding])
        gin.clear_config()


def test_a_misspelt_macro_binding_is_an_error_with_the_names_it_may_mean():
    """gin took `--gin.LEARNING_RAET=1e-3` as a macro of its own: the run trained at the configured rate."""
    with pytest.raises(launch.ConfigError, match=r"--gin\.LEARNING_RAET binds a macro that no gin file .*did you mean --gin\.LEARNING_RATE"):
        launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'", "LEARNING_RAET=1e-3"])
    gin.clear_config()
    with pytest.raises(launch.ConfigError, match=r"--gin\.TRAIN_STEPZ binds a macro .*did you mean --gin\.TRAIN_STEPS"):
        launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'", "TRAIN_STEPZ = 3"])
    gin.clear_config()
    # macros a file uses through another macro, or only a binding uses, are in use
    launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'", "PEAK=1e-3", "LEARNING_RATE=%PEAK"])
    assert gin.query_parameter("%PEAK") == 1e-3
    gin.clear_config()


def test_a_macro_the_users_own_gin_file_defines_and_nothing_uses_is_said(tmp_path, caplog):
    """`LEARNING_RAET = 1e-5` in a user's file that includes our experiment trained at the experiment's rate, without
    a word (only --gin. bindings were checked). Our own files' macros are not the user's to fix."""
    mine = tmp_path / "mine.gin"
    mine.write_text("include 'experiments/quickstart.gin'\nLEARNING_RAET = 1e-5\nLEARNING_RATE = 1e-3\n"
                    "train_lib.train:\n  eval_steps = 2\nMY_PERIOD = 5\n")  # fmt: skip
    with caplog.at_level("WARNING", logger="textchem_jax.launch"):
        launch.parse_gin([str(mine)], ["MODEL_DIR='/tmp/x'"])
    said = [record.getMessage() for record in caplog.records if record.name == "textchem_jax.launch"]
    assert said == [
        f"{mine} defines the macro LEARNING_RAET, which no gin file or binding uses, so it changes nothing: did you "
        "mean LEARNING_RATE or LEARNING_RATE_SCHEDULE?",
        f"{mine} defines the macro MY_PERIOD, which no gin file or binding uses, so it changes nothing: use it as "
        "%MY_PERIOD in a binding, or remove it",
    ]
    assert gin.query_parameter("%LEARNING_RATE") == 1e-3
    caplog.clear()
    with caplog.at_level("WARNING", logger="textchem_jax.launch"):
        launch.parse_gin([str(mine)], ["MODEL_DIR='/tmp/x'", "train_lib.train.log_period = %MY_PERIOD",
                                      "LEARNING_RATE = %LEARNING_RAET"])  # fmt: skip
        launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'"])  # ours, unchanged
        launch.parse_gin([str(mine)], ["MODEL_DIR='/tmp/x'"], warn_unused_macros=False)  # a sweep's points: said once
    assert not [record for record in caplog.records if record.name == "textchem_jax.launch"]


def test_a_tilde_in_a_quoted_binding_or_a_gin_file_name_is_the_home_folder(tmp_path, monkeypatch):
    """bash leaves `--gin.MODEL_DIR="'~/run'"` alone: training wrote into a folder named `~` in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.gin").write_text("TRAIN_STEPS = 7\n")
    launch.parse_gin(["experiments/quickstart.gin", "~/mine.gin"], ["MODEL_DIR = '~/run'", 'INITIAL_CHECKPOINT_PATH="~"'])
    assert gin.query_parameter("%MODEL_DIR") == str(tmp_path / "run") and gin.query_parameter("%TRAIN_STEPS") == 7
    assert gin.query_parameter("%INITIAL_CHECKPOINT_PATH") == str(tmp_path)
    gin.clear_config()
    launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='gs://bucket/~x'"])  # only a leading ~ is the home
    assert gin.query_parameter("%MODEL_DIR") == "gs://bucket/~x"
    gin.clear_config()


def test_the_commands_help_and_their_argument_mistakes(tmp_path):
    """--help listed no flag of ours (absl shows the main module's, and a console script's wrapper defines none);
    a stray argument was ignored and the run went on; `--gin.TRAIN_STEPS 5` was an 'unknown flag'."""
    def command(*args):
        return subprocess.run([sys.executable, "-m", "textchem_jax.train", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    shown = command("--help")
    assert "the T5X-style training loop" in shown.stdout and shown.returncode == 0  # (absl's help ended with 1)
    assert all(flag in shown.stdout for flag in ("--gin_file", "--gin_search_paths", "--gin.NAME=VALUE", "--[no]restore_fallback"))
    stray = command("--gin_file=experiments/quickstart.gin", f"--gin.MODEL_DIR='{tmp_path}'", "extra")
    assert stray.returncode == 2 and "unexpected argument(s) extra" in stray.stderr and not list(tmp_path.iterdir())
    spaced = command("--gin_file=experiments/quickstart.gin", "--gin.TRAIN_STEPS", "5")
    assert spaced.returncode == 2 and "--gin.TRAIN_STEPS needs its value after '=': --gin.TRAIN_STEPS=VALUE" in spaced.stderr


def test_our_warnings_read_as_plain_lines_under_absl():
    """Our warnings (inputs cut, Ctrl-C received) came out as `W1206 10:24:08.565603 140366921472896 train.py:68] ...`."""
    code = ("import logging; from absl import logging as absl_logging; absl_logging.use_absl_handler(); "
            "from textchem_jax import launch; launch.quiet_libraries(); "
            "logging.getLogger('textchem_jax.evaluator').warning('%d inputs cut', 2); logging.getLogger('seqio').warning('theirs')")  # fmt: skip
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stderr.splitlines()
    assert "warning: 2 inputs cut" in lines
    assert any(line.startswith("W") and line.endswith("] theirs") for line in lines), lines  # a library's: absl's format


def test_tensorflows_cache_warning_is_off_the_console_unless_verbose():
    """`import jax` (every command's first step) sets TF_CPP_MIN_LOG_LEVEL=1 where it is unset, and quiet_libraries'
    setdefault kept it: a user's TFDS-backed SeqIO task printed TensorFlow's `cache_dataset_ops.cc:912] The calling
    iterator did not fully read the dataset being cached` 4 times per evaluation. Without quiet_libraries (--verbose)
    it is still there, and a level the user set is kept."""
    code = ("import sys, jax; from textchem_jax import cli; sys.argv[1] == 'quiet' and cli.quiet_libraries(); "
            "import os, tensorflow as tf; [None for _ in tf.data.Dataset.range(10).cache().take(2)]; "
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])")  # fmt: skip
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    runs = {name: subprocess.Popen([sys.executable, "-c", code, mode], env={**env, **extra}, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for name, mode, extra in [("quiet", "quiet", {}), ("verbose", "verbose", {}),
                                      ("user's", "quiet", {"TF_CPP_MIN_LOG_LEVEL": "0"})]}  # fmt: skip
    results = {name: run.communicate(timeout=300) for name, run in runs.items()}
    warning = "did not fully read the dataset being cached"
    assert warning in results["verbose"][1] and results["verbose"][0] == "1\n"  # jax's level: TensorFlow says it
    assert warning not in results["quiet"][1] and results["quiet"][0] == "2\n", results["quiet"][1][-2000:]
    assert warning in results["user's"][1] and results["user's"][0] == "0\n"


@pytest.mark.parametrize("first", ["ours", "theirs"])
def test_our_warnings_read_as_plain_lines_in_the_argparse_commands(first):
    """Without absl's handler (textchem-robustness, -convert, -report, ...) a library's logging.basicConfig() made
    ours `WARNING:textchem_jax.evaluator:2 inputs cut`, called after quiet_libraries or before it (robustness)."""
    calls = ["launch.quiet_libraries()", "logging.basicConfig()"]
    code = (f"import logging; from textchem_jax import launch; {'; '.join(calls if first == 'ours' else calls[::-1])}; "
            "logging.getLogger('textchem_jax.evaluator').warning('%d inputs cut', 2); logging.getLogger('seqio').warning('theirs')")  # fmt: skip
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stderr.splitlines()
    assert "warning: 2 inputs cut" in lines, lines
    assert ("WARNING seqio: theirs" if first == "ours" else "WARNING:seqio:theirs") in lines, lines  # theirs as set up


def test_parsing_again_in_one_process_starts_afresh_even_after_a_rejected_configuration():
    """A notebook cell run again, after a typo fixed: gin stayed locked ("Attempted to modify locked Gin config"),
    even after a configuration parse_gin had rejected."""
    with pytest.raises(launch.ConfigError, match="did you mean --gin.LEARNING_RATE"):
        launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'", "LEARNING_RAET = 1e-3"])
    for steps in (3, 5):
        launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'", f"TRAIN_STEPS = {steps}"])
        assert gin.query_parameter("%TRAIN_STEPS") == steps
    gin.clear_config()


def test_runs_and_models_folders_where_python_runs_do_not_break_the_includes(tmp_path, monkeypatch):
    """`python -m textchem_jax.train` or a notebook in a project with a `runs/` or `models/` folder (the working
    directory is on sys.path there): gin took the folder for the package of `include 'runs/pretrain.gin'` and
    raised TypeError. Parsing again in the process keeps one reader of each kind."""
    from gin import config

    for folder in ("runs", "models"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for steps in (3, 5):
        launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'", f"TRAIN_STEPS = {steps}"])
        assert gin.query_parameter("%TRAIN_STEPS") == steps
    assert len(config._FILE_READERS) == 3, config._FILE_READERS  # local files, packages, gs://
    gin.clear_config()


def test_a_gin_file_with_a_byte_order_mark_is_explained(tmp_path):
    """gin reads a file's leading U+FEFF as a token; the error said to write a Python literal."""
    saved = tmp_path / "windows.gin"
    saved.write_bytes(b'\xef\xbb\xbfinclude "experiments/quickstart.gin"\r\nTRAIN_STEPS = 3\r\n')
    with pytest.raises(launch.ConfigError, match=rf"(?s){saved}, line 1: .*Fix: the file starts with a byte-order mark"):
        launch.parse_gin([str(saved)], [])
    gin.clear_config()
    saved.write_bytes(saved.read_bytes()[3:])  # saved without it, the same file parses (CRLF line ends are fine)
    launch.parse_gin([str(saved)], ["MODEL_DIR='/tmp/x'"])
    assert gin.query_parameter("%TRAIN_STEPS") == 3


def test_a_binding_that_is_no_literal_is_said_in_words():
    """A bare word as a value was "malformed node or string on line 1: <ast.Name object at 0x7f82...>" (probe:
    textchem-sweep --grid=LEARNING_RATE=1e-3,abc)."""
    with pytest.raises(launch.ConfigError) as error:
        launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'", "LEARNING_RATE=abc"])
    gin.clear_config()
    assert str(error.value).startswith("the binding 'LEARNING_RATE=abc' (--gin.NAME=VALUE or --gin_bindings): 'abc' is "
                                       "not a Python literal\nFix: a value is a Python literal or a gin reference")  # fmt: skip


def test_a_required_dict_macro_gets_an_example_of_its_own_kind():
    """The fix for a missing TASK_FEATURE_LENGTHS shows a dict, which works when pasted, not a string."""
    with pytest.raises(launch.ConfigError) as error:
        launch.parse_gin(["models/t5_tiny.gin", "runs/eval.gin"], ["CHECKPOINT_PATH='/tmp/x'", "EVAL_OUTPUT_DIR='/tmp/x'",
                                                                   "MIXTURE_OR_TASK_NAME='textchem_demo'"])  # fmt: skip
    assert "add --gin.TASK_FEATURE_LENGTHS=VALUE, e.g. --gin.TASK_FEATURE_LENGTHS=\"{'inputs': 512, 'targets': 512}\"" in str(error.value)
    gin.clear_config()
    pasted = str(error.value).split("e.g. --gin.")[1].split(", or bind")[0].replace('"', "")
    launch.parse_gin(["models/t5_tiny.gin", "runs/eval.gin"], ["CHECKPOINT_PATH='/tmp/x'", "EVAL_OUTPUT_DIR='/tmp/x'",
                                                               "MIXTURE_OR_TASK_NAME='textchem_demo'", pasted])  # fmt: skip
    assert gin.query_parameter("%TASK_FEATURE_LENGTHS") == {"inputs": 512, "targets": 512}


_TRAIN = (["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'"])
_EVAL = (["models/t5_tiny.gin", "runs/eval.gin"], ["CHECKPOINT_PATH='/tmp/x'", "EVAL_OUTPUT_DIR='/tmp/x'",
                                                  "MIXTURE_OR_TASK_NAME='textchem_demo'",
                                                  "TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 32}"])  # fmt: skip
_INFER = (["models/t5_tiny.gin", "runs/infer.gin"], ["CHECKPOINT_PATH='/tmp/x'", "INFER_OUTPUT_DIR='/tmp/x'"])
# (T5X_NAMES key, configuration, the T5X binding, the binding the message gives; None: we have no counterpart)
_T5X_BINDINGS = [
    ("EVAL_STEPS", _TRAIN, "EVAL_STEPS=3", "train_lib.train.eval_steps=3"),
    ("EVAL_PERIOD", _TRAIN, "EVAL_PERIOD=5", "train_lib.train.eval_period=5"),
    ("EVALUATOR_NUM_EXAMPLES", _TRAIN, "EVALUATOR_NUM_EXAMPLES=4",
     "infer_eval/run_config.DatasetConfig.num_examples=4"),
    ("train.eval_steps", _TRAIN, "train.eval_steps=3", "train_lib.train.eval_steps=3"),
    ("train.eval_period", _TRAIN, "train.eval_period=5", "train_lib.train.eval_period=5"),
    ("train.stats_period", _TRAIN, "train.stats_period=7", "train_lib.train.log_period=7"),
    ("trainer.num_microbatches", _TRAIN, "trainer.num_microbatches=2", "trainer.Trainer.num_microbatches=2"),
    ("utils.DatasetConfig", _TRAIN, "train/utils.DatasetConfig.batch_size=4",
     "train/run_config.DatasetConfig.batch_size=4"),
    ("utils.SaveCheckpointConfig", _TRAIN, "utils.SaveCheckpointConfig.keep=2", "run_config.CheckpointConfig.keep=2"),
    ("utils.RestoreCheckpointConfig.mode", _EVAL, "utils.RestoreCheckpointConfig.mode='all'", "CHECKPOINT_STEPS='all'"),
    ("partitioning.PjitPartitioner.num_partitions", _TRAIN, "partitioning.PjitPartitioner.num_partitions=2",
     "NUM_PARTITIONS=2"),
    ("partitioning.ModelBasedPjitPartitioner.num_partitions", _TRAIN,
     "partitioning.ModelBasedPjitPartitioner.num_partitions=2", "NUM_PARTITIONS=2"),  # T5X's current name
    ("seqio.Evaluator.num_examples", _TRAIN, "seqio.Evaluator.num_examples=6",
     "infer_eval/run_config.DatasetConfig.num_examples=6"),
    ("seqio.Evaluator.num_examples", _EVAL, "seqio.Evaluator.num_examples=6",
     "run_config.DatasetConfig.num_examples=6"),  # eval.gin's dataset config has no scope
    ("infer.mode", _INFER, "infer_lib.infer.mode='score'", None),
]


def _bound(name: str):
    """The value gin holds for `name` as our gin files write it (`train/run_config.DatasetConfig.batch_size`, or a
    macro)."""
    if "." not in name:
        return gin.query_parameter(f"%{name}")
    scope, _, name = name.rpartition("/")
    selector, _, parameter = name.rpartition(".")
    config = gin.config._CONFIG  # gin-config 0.5: (scope, full selector) -> parameters
    [value] = [bound[parameter] for (s, full), bound in config.items()
               if s == scope and full.endswith(f".{selector}") and parameter in bound]  # fmt: skip
    return value


@pytest.mark.parametrize("t5x_name, configuration, theirs, ours", _T5X_BINDINGS)
def test_a_t5x_name_is_answered_with_ours_in_one_line(t5x_name, configuration, theirs, ours):
    """T5X's names were refused generically (`'utils' was not provided by an import statement`), cryptically
    (`not enough values to unpack`) or wrongly (`--gin.EVAL_STEPS`: "did you mean --gin.TRAIN_STEPS?"). The message
    now gives the binding to write, and that binding, pasted, parses and takes effect."""
    files, bindings = configuration
    with pytest.raises(launch.ConfigError) as error:
        launch.parse_gin(files, [*bindings, theirs])
    message = str(error.value)
    t5x_written = theirs.partition("=")[0].split("/")[-1].removeprefix("infer_lib.")  # shown as T5X writes it
    assert "\n" not in message and f"T5X's {t5x_written}" in message
    gin.clear_config()
    if ours is None:
        assert "has no counterpart" in message and "scoring given targets ('score') is not offered" in message
        return
    name, _, value = ours.partition("=")
    assert f"is ours {name}: write --gin.{name}=" in message
    pasted = message.split("write --gin.")[1].replace('"', "")
    assert pasted == ours
    launch.parse_gin(files, [*bindings, pasted])
    assert _bound(name) == ast.literal_eval(value)


def test_every_t5x_name_is_tested_and_t5x_flags_are_answered_in_one_line():
    """absl ended `--multiprocess_gpu` (T5X's switch for multi-host GPU runs) in "FATAL Flags parsing error",
    status 1."""
    assert {entry[0] for entry in _T5X_BINDINGS} | {"--multiprocess_gpu"} == set(launch.T5X_NAMES)
    result = subprocess.run([sys.executable, "-m", "textchem_jax.train", "--gin_file=experiments/quickstart.gin",
                             "--multiprocess_gpu", "--coordinator_address=127.0.0.1:1"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: T5X's --multiprocess_gpu has no counterpart: a multi-host run starts from "
                           "--coordinator_address=")  # fmt: skip


def test_a_t5x_gin_file_is_one_line_that_says_run_it_with_t5x(tmp_path):
    """A T5X gin file (`from t5x import adafactor` in a file it includes) ended textchem-train in an 80-line
    traceback."""
    dynamic = "from __gin__ import dynamic_registration\n"
    (tmp_path / "t5x_model.gin").write_text(f"{dynamic}import seqio\nfrom t5x import adafactor\n")
    (tmp_path / "mine.gin").write_text(f"{dynamic}include 't5x_model.gin'\nTRAIN_STEPS = 2\n")
    with pytest.raises(launch.ConfigError) as error:
        launch.parse_gin(["mine.gin"], ["MODEL_DIR='/tmp/x'"], [str(tmp_path)])
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 't5x_model.gin'}, line 3 (included from ")
    assert "mine.gin, line 2)" in message
    assert "'from t5x import adafactor' makes it a T5X config" in message and "python -m t5x.train" in message
    assert "models/*.gin with runs/*.gin" in message


def test_a_gin_import_of_a_missing_module_is_one_line(tmp_path):
    """Any module a gin file imports and Python lacks was a traceback too; a T5X macro the user's own file sets is
    answered with ours, not with a near spelling."""
    mine = tmp_path / "mine.gin"
    mine.write_text("include 'experiments/quickstart.gin'\nfrom __gin__ import dynamic_registration\n"
                    "import no_such_module_xyz\n")
    with pytest.raises(launch.ConfigError) as error:
        launch.parse_gin([str(mine)], ["MODEL_DIR='/tmp/x'"])
    assert str(error.value) == (f"{mine}, line 3: 'import no_such_module_xyz' fails (no module named "
                                "'no_such_module_xyz'): install it or remove the import")  # fmt: skip
    gin.clear_config()
    mine.write_text("include 'experiments/quickstart.gin'\nEVAL_STEPS = 20\n")
    launch.parse_gin([str(mine)], ["MODEL_DIR='/tmp/x'"])
    [said] = launch.unused_macros([(str(mine), mine.read_text())])
    assert said.endswith("T5X's EVAL_STEPS is ours train_lib.train.eval_steps: write train_lib.train.eval_steps = 20 "
                         "(after `from __gin__ import dynamic_registration`; `from textchem_jax import train as "
                         "train_lib`, as runs/*.gin import it)")  # fmt: skip


def test_search_paths_of_one_parse_do_not_carry_over_to_the_next(tmp_path):
    """A notebook: gin's search paths outlived gin.clear_config(), so a cell without `search_paths` still read
    `experiments/quickstart.gin` from the folder an earlier cell gave (TRAIN_STEPS 11 of that copy, not 400)."""
    packaged = CONFIGS / "experiments" / "quickstart.gin"
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "quickstart.gin").write_text(f"{packaged.read_text()}\nTRAIN_STEPS = 11\n")
    (tmp_path / "only_here.gin").write_text("include 'experiments/quickstart.gin'\n")
    launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'"], search_paths=[str(tmp_path)])  # cell A
    assert gin.query_parameter("%TRAIN_STEPS") == 11  # (was the packaged file's after any earlier parse_gin)
    launch.parse_gin(["experiments/quickstart.gin"], ["MODEL_DIR='/tmp/x'"])  # cell B
    cell_b_steps = gin.query_parameter("%TRAIN_STEPS")
    launch.parse_gin([str(packaged)], ["MODEL_DIR='/tmp/x'"])  # a path as given: no search path involved
    assert cell_b_steps == gin.query_parameter("%TRAIN_STEPS") != 11
    with pytest.raises(launch.ConfigError, match=r"Unable to open file: only_here\.gin"):
        launch.parse_gin(["only_here.gin"], ["MODEL_DIR='/tmp/x'"])


@pytest.mark.parametrize("theirs, selector", [
    ("utils.SaveCheckpointConfig.dtype='float32'", "run_config.CheckpointConfig"),
    ("utils.SaveCheckpointConfig.save_dataset=False", "run_config.CheckpointConfig"),
    ("train/utils.DatasetConfig.use_custom_packing_ops=False", "run_config.DatasetConfig"),
])  # fmt: skip
def test_a_t5x_parameter_our_class_lacks_is_said_to_have_no_counterpart(theirs, selector):
    """T5X's selectors were mapped with every parameter: `--gin.run_config.CheckpointConfig.dtype="'float32'"` was
    the advice, and pasted it failed ("doesn't have a parameter named 'dtype'"). The advice now is to drop it, and
    the parameters it lists are ours: each, bound, parses."""
    with pytest.raises(launch.ConfigError) as error:
        launch.parse_gin(*_TRAIN[:1], [*_TRAIN[1], theirs])
    message = str(error.value)
    t5x_name = theirs.partition("=")[0].split("/")[-1]
    assert "\n" not in message and f"T5X's {t5x_name} (" in message, message
    assert f"has no counterpart here: ours {selector} takes " in message and message.endswith("; drop it"), message
    assert "write" not in message
    gin.clear_config()
    listed = message.split(" takes ")[1].removesuffix("; drop it").split(", ")
    launch.parse_gin(*_TRAIN)  # dropped, the configuration parses; what runs/pretrain.gin binds is among those listed
    bound = {parameter for (scope, full), values in gin.config._CONFIG.items()
             if full.endswith(f".{selector}") for parameter in values}  # fmt: skip
    assert bound and bound <= set(listed), (bound, listed)


@pytest.mark.parametrize("line, ours", [
    ("EVALUATOR_NUM_EXAMPLES = 4", "infer_eval/run_config.DatasetConfig.num_examples = 4"),
    ("train/utils.DatasetConfig.batch_size = 4", "train/run_config.DatasetConfig.batch_size = 4"),
])  # fmt: skip
def test_a_scoped_hint_for_a_gin_file_brings_the_import_its_binding_needs(tmp_path, line, ours):
    """The imports a gin file needs were looked up for `infer_eval/run_config`, a name with its scope, which no
    import provides: the hint said only `from __gin__ import dynamic_registration`, and pasted the binding failed
    ("'run_config' was not provided by an import statement")."""
    mine = tmp_path / "mine.gin"
    mine.write_text(f"include 'experiments/quickstart.gin'\n{line}\n")
    if line.startswith("EVALUATOR"):  # a macro the file sets and nothing uses: a warning
        launch.parse_gin([str(mine)], _TRAIN[1])
        [hint] = launch.unused_macros([(str(mine), mine.read_text())])
    else:
        with pytest.raises(launch.ConfigError) as error:
            launch.parse_gin([str(mine)], _TRAIN[1])
        hint = str(error.value)
    assert f"write {ours} (after " in hint, hint
    imports = re.findall(r"`([^`]+)`", hint.split(" (after ")[1])
    assert "from textchem_jax import run_config" in imports, hint
    gin.clear_config()
    mine.write_text("\n".join(["include 'experiments/quickstart.gin'", *imports, ours]) + "\n")  # pasted
    launch.parse_gin([str(mine)], _TRAIN[1])
    assert _bound(ours.partition(" = ")[0]) == 4


def test_t5x_restore_mode_specific_is_our_default_and_latest_and_all_map_to_checkpoint_steps():
    """`utils.RestoreCheckpointConfig.mode='specific'` (T5X eval.gin's default) was answered with
    CHECKPOINT_STEPS='specific', which evaluate() rejects; ours evaluates the one checkpoint CHECKPOINT_PATH names
    by default."""
    from textchem_jax.evaluate import CHECKPOINT_STEPS

    files, bindings = _EVAL
    with pytest.raises(launch.ConfigError) as error:
        launch.parse_gin(files, [*bindings, 'utils.RestoreCheckpointConfig.mode="specific"'])
    message = str(error.value)
    assert "\n" not in message and "write" not in message, message
    assert "T5X's utils.RestoreCheckpointConfig.mode=\"specific\" is our default: leave CHECKPOINT_STEPS out" in message
    gin.clear_config()
    launch.parse_gin(files, bindings)  # left out, as said
    assert gin.query_parameter("%CHECKPOINT_STEPS") == "latest" and "latest" in CHECKPOINT_STEPS
    for mode in CHECKPOINT_STEPS:  # 'latest' and 'all' have their twins
        gin.clear_config()
        with pytest.raises(launch.ConfigError) as error:
            launch.parse_gin(files, [*bindings, f"utils.RestoreCheckpointConfig.mode='{mode}'"])
        pasted = str(error.value).split("write --gin.")[1].replace('"', "")
        launch.parse_gin(files, [*bindings, pasted])
        assert gin.query_parameter("%CHECKPOINT_STEPS") == mode


def test_an_import_error_inside_our_own_modules_keeps_its_traceback(tmp_path, monkeypatch):
    """Any ImportError of a gin file's import became "install it or remove the import", also one raised inside a
    textchem_jax module (a circular import), whose traceback was the only lead. A gin file's own failing import
    (a misspelt module of ours) is still one line."""
    import textchem_jax

    (tmp_path / "gin_test_cycle_a.py").write_text("from textchem_jax import gin_test_cycle_b\nVALUE = 1\n")
    (tmp_path / "gin_test_cycle_b.py").write_text("from textchem_jax.gin_test_cycle_a import VALUE\n")
    monkeypatch.setattr(textchem_jax, "__path__", [*textchem_jax.__path__, str(tmp_path)])  # textchem_jax.* modules
    for name in ("gin_test_cycle_a", "gin_test_cycle_b"):
        monkeypatch.delitem(sys.modules, f"textchem_jax.{name}", raising=False)
    mine = tmp_path / "mine.gin"
    header = "include 'experiments/quickstart.gin'\nfrom __gin__ import dynamic_registration\n"
    mine.write_text(f"{header}from textchem_jax import gin_test_cycle_a\n")
    with pytest.raises(ImportError, match="partially initialized module") as error:
        launch.parse_gin([str(mine)], _TRAIN[1])
    assert any(entry.path.name == "gin_test_cycle_b.py" for entry in error.traceback)
    gin.clear_config()
    mine.write_text(f"{header}from textchem_jax import no_such_submodule_xyz\n")
    with pytest.raises(launch.ConfigError, match="no module named 'textchem_jax.no_such_submodule_xyz'"):
        launch.parse_gin([str(mine)], _TRAIN[1])


@pytest.mark.slow
def test_e2clm_variant_from_gin_trains_with_frozen_encoder_untouched():
    launch.parse_gin(
        ["models/e2clm_small.gin"],
        ["e2clm.e2clm_config.size='tiny'", "e2clm.e2clm_config.aggregation='select'",
         "e2clm.e2clm_config.freeze_chemistry=True", "DROPOUT_RATE=0.0"],
    )  # fmt: skip
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    assert isinstance(model, E2ClmModel) and "input_domain" in model.model_features
    batch = demo_batch(model)
    assert set(np.unique(batch["input_domain"])) == {0, 1}  # packed rows mix text and chemistry examples
    run = trainer_lib.Trainer(model, optax.adamw(1e-2, weight_decay=0.0), partitioning.make_mesh())
    state = run.init_state(jax.random.key(0))
    before = jax.device_get(state.params)
    state, metrics = run.train_step(state, run.shard_batch(batch), jax.random.key(1))
    after = jax.device_get(state.params)
    frozen = jax.tree_util.tree_leaves(before["chemistry_encoder"]), jax.tree_util.tree_leaves(after["chemistry_encoder"])
    assert all(np.array_equal(a, b) for a, b in zip(*frozen))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(before["text_encoder"]),
                                                        jax.tree_util.tree_leaves(after["text_encoder"])))  # fmt: skip
    # Frozen parameters keep no Adam moments: the optimizer state holds exactly two copies of the trained ones.
    def size(tree):
        return sum(leaf.size for leaf in jax.tree_util.tree_leaves(tree) if getattr(leaf, "ndim", 0) > 0)

    trained = size({k: v for k, v in after.items() if k != "chemistry_encoder"})
    assert size(state.opt_state) == 2 * trained


def test_e2clm_inference_evaluation_routes_by_domain(tmp_path):
    """Routed e2-CLM variants decode through the same search code; the evaluator feeds their domains."""
    import flax.linen as nn

    from textchem_jax.evaluator import InferenceEvaluator
    from textchem_jax.run_config import DatasetConfig

    model = tiny_e2clm(version="1.1", aggregation="cross_attention")
    params = nn.meta.unbox(model.init(jax.random.key(0)))
    cfg = DatasetConfig("textchem_demo_forward", {"inputs": 64, "targets": 8}, "validation", 4, pack=False, num_examples=4)
    evaluator = InferenceEvaluator(model, cfg, str(tmp_path), partitioning.make_mesh())
    results = evaluator.evaluate(params, step=1)
    assert set(results["textchem_demo_forward"]) == {"accuracy", "invalid_rate"}
    assert (tmp_path / "textchem_demo_forward-000001.jsonl").exists()
