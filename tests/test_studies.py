"""Scaling sweeps, notation robustness and the HTML report, on runs this file trains (the demo corpus).

The slow tests share one CPU sweep (two points: a multi-task and a cross-domain-only run) and run on one
xdist worker (`xdist_group`): the robustness evaluation and the report read its runs.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

import chromium
from helpers import ROOT, as_from_a_terminal
from textchem_jax import sweep
from textchem_jax.metrics import tables
from textchem_jax.chem import canonicalize
from textchem_jax.evaluator import retrieval_scores

SWEEP_FLAGS = [
    "--gin_file=experiments/quickstart.gin",
    "--grid=width=32",
    "--grid=mixture=standard,cross",
    "--gin.TRAIN_STEPS=20",
    "--gin.BATCH_SIZE=8",
    "--gin.TASK_FEATURE_LENGTHS={'inputs': 96, 'targets': 48}",  # shorter than the quickstart's: 2:19 against 2:42
    "--gin.train_lib.train.log_period=10",
    "--gin.train_lib.train.eval_steps=2",
    "--gin.run_config.CheckpointConfig.period=20",
    "--gin.infer_eval/run_config.DatasetConfig.num_examples=6",
]


def _textchem(command: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", f"textchem_jax.{command}", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def cpu_sweep(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sweep")
    first = _textchem("sweep", f"--sweep_dir={directory}", *SWEEP_FLAGS)
    return directory, first


BASE = sweep.Base(mixture="textchem_demo", train_steps=10, dimensions={"d_model": 128, "d_kv": 32, "d_ff": 256,
                  "num_heads": 4, "num_encoder_layers": 2, "num_decoder_layers": 2}, feed_forward="gated-gelu",
                  tie_word_embeddings=False, e2clm=False)  # fmt: skip


def test_grid_axes_become_gin_bindings_that_parse():
    axes = [sweep.parse_axis(a) for a in ("width=64", "mixture=cross,textchem_demo_text2mol", "data_fraction=0.25",
                                          "seed=1", "LEARNING_RATE=1e-3")]  # fmt: skip
    points = sweep.expand(axes, BASE)
    assert [p.name for p in points] == [
        "width-64_mixture-cross_data_fraction-0.25_seed-1_LEARNING_RATE-1e-3",
        "width-64_mixture-textchem_demo_text2mol_data_fraction-0.25_seed-1_LEARNING_RATE-1e-3",
    ]
    bindings = points[0].bindings
    # width 64: heads scale with d_model at d_kv 32, d_ff keeps the base's ratio of 2
    assert "config.t5_config.d_model=64" in bindings and "config.t5_config.num_heads=2" in bindings
    assert "config.t5_config.d_ff=128" in bindings
    assert "MIXTURE_OR_TASK_NAME='textchem_demo_cross'" in bindings
    assert "MIXTURE_OR_TASK_NAME='textchem_demo_text2mol'" in points[1].bindings
    assert "train/run_config.DatasetConfig.split='train[:25%]'" in bindings
    assert "RANDOM_SEED=1" in bindings and "LEARNING_RATE=1e-3" in bindings

    e2clm = sweep.expand([sweep.parse_axis("e2clm=frozen,select"), sweep.parse_axis("size=small")], BASE)
    assert e2clm[0].gin_files == ("models/e2clm_small.gin",)
    assert "e2clm.e2clm_config.freeze_text=True" in e2clm[0].bindings
    assert "e2clm.e2clm_config.d_model=512" in e2clm[0].bindings  # the size axis wins over the base dimensions
    # Every point's bindings are valid gin for textchem-train: the model they describe is built.
    import gin

    from textchem_jax import launch
    from textchem_jax.models.adapters import E2ClmModel

    for point, expected_width in ((points[0], 64), (e2clm[1], 512)):
        launch.parse_gin(["experiments/quickstart.gin", *point.gin_files], [*point.bindings, "MODEL_DIR='/tmp/unused'"])
        model = gin.query_parameter("%MODEL").scoped_configurable_fn()
        assert model.t5_config.d_model == expected_width
        assert isinstance(model, E2ClmModel) == bool(point.gin_files)
        gin.clear_config()

    with pytest.raises(ValueError, match="unknown axis"):
        sweep.expand([sweep.parse_axis("depth=2")], BASE)
    with pytest.raises(ValueError, match="expected AXIS=V1,V2"):
        sweep.parse_axis("width")
    for width in ("0", "-64", "wide"):  # 0 and -64 passed the check before any point, as d_model=0 and a point width--64
        with pytest.raises(ValueError, match=f"--grid=width: '{width}' is not a width; give d_model values"):
            sweep.expand([sweep.parse_axis(f"width={width}")], BASE)


def test_an_e2clm_point_keeps_every_setting_of_the_base_but_the_model(tmp_path):
    """The e2clm axis read models/e2clm_small.gin after the base's gin files: its DROPOUT_RATE = 0.1 replaced
    quickstart's 0.0, its task VOCABULARY a fine-tune base's checkpoint_vocabulary (which the checkpoint's own
    vocabulary check then refuses), and its z_loss and label_smoothing the base's. Parsed from the arguments each
    point's textchem-train gets, only the model differs now."""
    import gin

    from textchem_jax import launch
    from textchem_jax.data.vocabulary import CHECKPOINT_VOCABULARY_FILE
    from textchem_jax.models.adapters import E2ClmModel, EncoderDecoderModel

    checkpoint = tmp_path / "t5_import"  # what checkpoint_vocabulary reads of a textchem-convert folder
    checkpoint.mkdir()
    shutil.copy(ROOT / "textchem_jax/data/vocab/textchem_demo.model", checkpoint / CHECKPOINT_VOCABULARY_FILE)
    bases = {
        "experiments/quickstart.gin": ["adapters.EncoderDecoderModel.label_smoothing=0.1"],
        "experiments/text_chem_t5_small_standard.gin": [f"INITIAL_CHECKPOINT_PATH={str(checkpoint)!r}"],
    }

    def settings() -> tuple[type, dict]:
        model = gin.query_parameter("%MODEL").scoped_configurable_fn()
        t5 = model.t5_config
        return type(model), {"DROPOUT_RATE": gin.query_parameter("%DROPOUT_RATE"), "dropout_rate": t5.dropout_rate,
                             "VOCABULARY": gin.query_parameter("%VOCABULARY").selector, "d_model": t5.d_model,
                             "z_loss": model.z_loss, "label_smoothing": model.label_smoothing}  # fmt: skip

    try:
        for base_file, flags in bases.items():
            launch.parse_gin([base_file], [*flags, f"MODEL_DIR={str(tmp_path / 'base')!r}"])
            base_model, expected = settings()
            assert base_model is EncoderDecoderModel
            base = sweep.read_base([base_file], flags, [], str(tmp_path / "sweep"))
            passthrough = [f"--gin_file={base_file}", *(f"--gin.{flag}" for flag in flags)]
            for point in sweep.expand([sweep.parse_axis("e2clm=mean,frozen")], base):
                arguments = sweep.train_arguments(point, str(tmp_path / "sweep" / point.name), passthrough)
                bindings, others = launch.split_gin_flags(arguments)
                launch.parse_gin([arg.partition("=")[2] for arg in others if arg.startswith("--gin_file=")], bindings)
                model, found = settings()
                assert model is E2ClmModel and found == expected, (base_file, point.name, found, expected)
                gin.clear_config()
        assert expected["VOCABULARY"].endswith("checkpoint_vocabulary")  # the fine-tune base's, kept
    finally:
        gin.clear_config()


def _process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat: "T" stopped, "Z" ended (not yet reaped), "R" or "S" running."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def _wait_for_state(pid: int, wanted) -> str:
    import time

    for _ in range(600):
        if wanted(state := _process_state(pid)):
            return state
        time.sleep(0.5)
    raise AssertionError(f"process {pid} stayed in state {state}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and job control")
def test_a_sigint_to_the_sweeps_pid_alone_reaches_its_point_once_and_ctrl_z_stops_both(tmp_path):
    """`kill -INT <sweep pid>` was not passed on: the sweep said it waited for the point to save, but the point
    trained on to its last step and evaluated. The point now runs in its own process group and the sweep passes each
    Ctrl-C on once (a terminal's would otherwise reach it twice, and a second Ctrl-C stops textchem-train unsaved).
    Ctrl-Z, which the terminal sends to the sweep's group only, stops the point too, and `fg` continues both."""
    import signal

    flags = [*SWEEP_FLAGS[:2], "--gin.TRAIN_STEPS=100000", *SWEEP_FLAGS[4:]]  # one point, far from done
    command = as_from_a_terminal([sys.executable, "-m", "textchem_jax.sweep", f"--sweep_dir={tmp_path}", *flags])
    # A process group of its own in this session, as a shell's job: a new session's would be orphaned, and the
    # kernel drops a Ctrl-Z sent to an orphaned group
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               process_group=0)  # fmt: skip
    child = None
    try:
        for line in process.stdout:
            if line.strip().startswith("step 10/"):
                break
        (child,) = _children(process.pid)
        os.killpg(process.pid, signal.SIGTSTP)  # Ctrl-Z: to the terminal's foreground process group
        _wait_for_state(child, lambda state: state == "T")
        os.killpg(process.pid, signal.SIGCONT)  # fg
        _wait_for_state(child, lambda state: state != "T")
        os.kill(process.pid, signal.SIGINT)  # the sweep's pid alone
        output = process.communicate(timeout=300)[0]
    finally:
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)
        process.kill()
    assert process.returncode == 130, output[-3000:]
    assert "interrupted: saved step" in output and "interrupted at once" not in output, output[-3000:]
    (point,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    record = json.loads((point / sweep.POINT_FILE).read_text())
    assert record["status"] == "interrupted" and record["returncode"] == 130, record


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_point_that_finished_before_the_sweeps_ctrl_c_took_effect_is_recorded_done(tmp_path, capsys):
    """A point whose textchem-train exited 0 while the sweep was being interrupted was recorded
    `"status": "interrupted", "returncode": 0`, and the rerun trained it again. Here the sweep is paused until its
    point has ended, then interrupted."""
    import signal

    flags = [f"--sweep_dir={tmp_path}", SWEEP_FLAGS[0], *QUICK_SWEEP_FLAGS, "--gin.TRAIN_STEPS=2",
             "--gin.run_config.CheckpointConfig.period=2"]  # fmt: skip
    from helpers import as_from_a_terminal

    process = subprocess.Popen(as_from_a_terminal([sys.executable, "-m", "textchem_jax.sweep", *flags]), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    child = None
    try:
        for line in process.stdout:
            if ": training (log:" in line:
                break
        _wait_for_state(process.pid, lambda state: _children(process.pid))  # textchem-train started
        (child,) = _children(process.pid)
        os.kill(process.pid, signal.SIGSTOP)  # its output waits in the pipe, the point trains and evaluates
        _wait_for_state(child, lambda state: state == "Z")
        os.kill(process.pid, signal.SIGINT)
        os.kill(process.pid, signal.SIGCONT)
        output = process.communicate(timeout=300)[0]
    finally:
        process.kill()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)
    assert process.returncode == 130, output[-3000:]
    record = json.loads((tmp_path / "width-32" / sweep.POINT_FILE).read_text())
    assert record["status"] == "done" and record["returncode"] == 0, record
    assert sweep.main(flags) == 0
    assert "finished before, skipped" in capsys.readouterr().out


def test_a_sweep_over_the_users_own_mixture_imports_its_module(tmp_path, monkeypatch):
    """textchem-sweep refused every sweep over a user's own task or mixture ("no SeqIO task or mixture is named
    'my_rxn_mix' ... your own need their module in MIXTURE_OR_TASK_MODULE") although the gin file bound that module
    and textchem-train trained it: the sweep looked the names up without importing it."""
    import gin
    import seqio

    (tmp_path / "sweep_users_tasks.py").write_text(
        "import seqio\nseqio.MixtureRegistry.add('sweep_users_mix', [('textchem_demo_forward', 1.0)])\n")
    (tmp_path / "mine.gin").write_text("include 'experiments/quickstart.gin'\nMIXTURE_OR_TASK_MODULE = 'sweep_users_tasks'\n"
                                       "MIXTURE_OR_TASK_NAME = 'sweep_users_mix'\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)  # found in the working directory, as textchem-train finds it (a console script
    monkeypatch.setattr(sys, "path", [path for path in sys.path if path not in ("", str(tmp_path))])  # starts without)
    try:
        base = sweep.read_base(["mine.gin"], ["TRAIN_STEPS=6"], [], str(tmp_path / "sweep"))
        assert base.mixture == "sweep_users_mix" and base.train_steps == 6
        points = sweep.expand([sweep.parse_axis("LEARNING_RATE=1e-3,3e-3")], base)
        sweep.check_points(points, ["mine.gin"], ["TRAIN_STEPS=6"], [], str(tmp_path / "sweep"))
        with pytest.raises(ValueError, match=r"point mixture=sweep_users_mi: no SeqIO task or mixture is named "
                                             r"'sweep_users_mi': did you mean 'sweep_users_mix'"):  # fmt: skip
            sweep.check_points(sweep.expand([sweep.parse_axis("mixture=sweep_users_mi")], base), ["mine.gin"], [], [],
                               str(tmp_path / "sweep"))  # fmt: skip
    finally:
        gin.clear_config()
        if "sweep_users_mix" in seqio.MixtureRegistry.names():
            seqio.MixtureRegistry.remove("sweep_users_mix")
        sys.modules.pop("sweep_users_tasks", None)


def test_split_slices_take_the_leading_fraction():
    import seqio

    import tasks  # noqa: F401
    from textchem_jax.data import datasets, seqio_tasks

    whole = datasets.task_pairs("forward", "train", seqio_tasks.demo_directory(), reactions="uspto_mit")
    quarter = datasets.task_pairs("forward", "train[:25%]", seqio_tasks.demo_directory(), reactions="uspto_mit")
    assert quarter == whole[: math.ceil(len(whole) / 4)]
    task = seqio.get_mixture_or_task("textchem_demo_forward")
    dataset = task.get_dataset({"inputs": 64, "targets": 64}, split="train[:10%]", shuffle=False)
    assert sum(1 for _ in dataset) == math.ceil(len(whole) / 10)
    # A mixture reads each of its tasks' slices: SeqIO skipped every task ("No datasets have a 'train[:10%]'
    # split"), so the sweep's data_fraction axis could not run on any mixture.
    mixture = seqio.get_mixture_or_task("textchem_demo")
    assert all("train[:10%]" in task.splits and "train[:0%]" not in task.splits for task in mixture.tasks)
    assert next(mixture.get_dataset({"inputs": 64, "targets": 64}, split="train[:10%]", shuffle=False).as_numpy_iterator())
    with pytest.raises(ValueError, match=r"percentage must be in \(0, 100\]"):
        datasets.task_pairs("forward", "train[:0%]", seqio_tasks.demo_directory())


def test_notation_variant_tasks_rewrite_only_the_smiles_inputs():
    import seqio

    import tasks  # noqa: F401
    from textchem_jax.data import seqio_tasks

    names = seqio_tasks.notation_variants("textchem_demo_retro", ["kekulized", "random_0"])
    assert names == ["textchem_demo_retro_notation_kekulized", "textchem_demo_retro_notation_random_0"]
    assert seqio_tasks.notation_variants("textchem_demo_text2mol", ["kekulized"]) == []  # a text input
    original = seqio_tasks.SPECS["textchem_demo_retro"].pairs("validation")
    for name in names:
        rewritten = seqio_tasks.SPECS[name].pairs("validation")
        assert [t for _, t in rewritten] == [t for _, t in original]  # targets as they were
        assert all(canonicalize(new) == canonicalize(old) for (new, _), (old, _) in zip(rewritten, original))
        assert sum(new != old for (new, _), (old, _) in zip(rewritten, original)) > len(original) / 2
    kekulized = seqio.get_mixture_or_task(names[0]).get_dataset({"inputs": 256, "targets": 256}, split="validation",
                                                                 shuffle=False)  # fmt: skip
    first = next(iter(kekulized.as_numpy_iterator()))["inputs_pretokenized"].decode()
    assert first.startswith("Predict the reaction that produces the following product: ") and not any(c in first.split(": ")[1] for c in "cnos")


def test_retrieval_scores_rank_each_variant_among_all_originals():
    rng = np.random.default_rng(0)
    originals = rng.normal(size=(10, 16))
    assert retrieval_scores(originals, originals + 1e-3 * rng.normal(size=(10, 16))) == {"acc@1": 1.0, "acc@5": 1.0, "mrr": 1.0}
    shifted = retrieval_scores(originals, np.roll(originals, 1, axis=0))  # each variant is its neighbour's original
    assert shifted["acc@1"] == 0.0 and shifted["mrr"] < 0.5
    tied = retrieval_scores(np.ones((4, 3)), np.ones((4, 3)))  # indistinguishable originals: a tie is no retrieval
    assert tied["acc@1"] == 0.0 and tied["mrr"] == 0.25


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_a_stopped_sweep_saves_the_point_and_its_rerun_goes_on_from_the_saved_step(tmp_path, stop):
    """Ctrl-C in a terminal and a SIGTERM (`kill`, a cluster's stop) reach the sweep only (its point runs in a
    process group of its own), which passes each on once. Either way the point saves its step and the sweep waits for it,
    records the time spent and exits with how to go on (Ctrl-C ended in a traceback; a SIGTERM left textchem-train
    to die unsaved, the point "running" with 0 s). The point's log is written as it trains (it came in 4 KiB blocks).
    Run from a folder with the user's own `tasks.py`: every point started there read it, not ours, and failed."""
    import signal

    flags = [*SWEEP_FLAGS[:2], "--gin.TRAIN_STEPS=100000", *SWEEP_FLAGS[4:]]  # one point, far from done
    user = tmp_path / "user"
    user.mkdir()
    (user / "tasks.py").write_text("raise SystemExit('the user tasks.py was imported')\n")
    # -P: the path of the `textchem-sweep` console script, which leaves out the folder it runs from
    command = as_from_a_terminal([sys.executable, "-P", "-m", "textchem_jax.sweep", f"--sweep_dir={tmp_path}", *flags])
    process = subprocess.Popen(command, cwd=user, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # its own process group, as a terminal's foreground job
    for line in process.stdout:
        if line.strip().startswith("step 10/"):
            break
    (point,) = [p for p in tmp_path.iterdir() if p.is_dir() and p != user]
    assert "step 10/" in (point / "train.log").read_text()
    if stop == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)  # as a terminal sends it: to the whole foreground process group
    else:
        process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    word, code, saved = ("interrupted", 130, "interrupted: saved step") if stop == "ctrl-c" else ("terminated", 143, "preempted: saved step")
    assert process.returncode == code, output[-3000:]
    assert saved in output and f"textchem-sweep: {word}; rerun the same command" in output, output[-3000:]
    assert "Traceback" not in output and "interrupted at once" not in output, output[-3000:]
    assert [p.name for p in (point / "checkpoints").iterdir() if p.name.isdigit()]
    record = json.loads((point / sweep.POINT_FILE).read_text())
    assert record["status"] == word and record["wall_seconds"] > 1, record
    assert saved in (point / "train.log").read_text()


# A one-point sweep that trains in about a minute: tiny feature lengths, 2 evaluation batches, 6 decoded examples.
QUICK_SWEEP_FLAGS = [
    "--grid=width=32", "--gin.BATCH_SIZE=8", "--gin.TASK_FEATURE_LENGTHS={'inputs': 96, 'targets': 48}",
    "--gin.train_lib.train.eval_steps=2", "--gin.infer_eval/run_config.DatasetConfig.num_examples=6",
]


@pytest.mark.slow
def test_a_changed_gin_file_is_refused_as_a_changed_flag_is_and_the_console_shows_the_evaluation(tmp_path, capsys):
    """The contents of a gin file (here one the base file includes) changed between two runs of a sweep went
    unnoticed: its finished point was "finished before, skipped" with its old settings, and a resumed one trained on
    under the new ones; the same change given as a flag was refused. A comment changes no setting: skipped still.
    The console was silent through each point's final evaluation: its decoding progress and heading now show."""
    part = tmp_path / "part.gin"
    part.write_text("LEARNING_RATE = 3e-3\n")
    base = tmp_path / "mine.gin"
    base.write_text(f"include 'experiments/quickstart.gin'\ninclude '{part}'\n")
    flags = [f"--sweep_dir={tmp_path / 'sweep'}", f"--gin_file={base}", *QUICK_SWEEP_FLAGS, "--gin.TRAIN_STEPS=2",
             "--gin.run_config.CheckpointConfig.period=2"]  # fmt: skip
    assert sweep.main(flags) == 0
    out = capsys.readouterr().out
    assert re.search(r"^    decoding \w+: ([\d,]+)/\1 examples in ", out, re.M), out
    assert re.search(r"^    evaluation at step 2 ", out, re.M), out
    assert "exact_match" not in out and "bleu2" not in out, out  # the metric tables stay in train.log
    record_file = tmp_path / "sweep" / "width-32" / sweep.POINT_FILE
    record = record_file.read_text()
    assert json.loads(record)["configuration"]["files"].keys() >= {str(base), str(part)}

    part.write_text("LEARNING_RATE = 1e-4\n")
    assert sweep.main(flags) == 2
    assert f"was trained in {tmp_path / 'sweep' / 'width-32'} with other contents of its gin files ({part} changed " \
           "since): resuming would mix them" in capsys.readouterr().err  # fmt: skip
    assert record_file.read_text() == record
    part.write_text("LEARNING_RATE = 3e-3  # as before\n")
    assert sweep.main(flags) == 0
    assert "finished before, skipped" in capsys.readouterr().out
    # Fewer steps than the point trained: its textchem-train was started to say "nothing to train", and the record
    # then named TRAIN_STEPS=1 for a run of 2 steps.
    assert sweep.main([*flags, "--gin.TRAIN_STEPS=1"]) == 0
    assert "finished before, skipped" in capsys.readouterr().out and record_file.read_text() == record


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie that nobody has reaped yet has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_sigkilled_sweep_stops_its_point_which_saves_and_the_rerun_counts_the_killed_attempts_time(tmp_path):
    """A SIGKILL of the sweep left its textchem-train training on, unseen, until its next line hit the dead pipe,
    and it died there unsaved; the killed attempt's time was lost from the point's wall time (killed after 42 s, the
    rerun showed the second attempt's 55.57 s). Now the kernel sends the point a SIGTERM when the sweep dies: it
    saves as on a preemption and stops (no log line, no periodic checkpoint here before step 100000), and the rerun
    counts the killed attempt's time up to its log's last line."""
    import signal
    import time

    flags = [f"--sweep_dir={tmp_path}", SWEEP_FLAGS[0], *QUICK_SWEEP_FLAGS, "--gin.train_lib.train.log_period=100000",
             "--gin.run_config.CheckpointConfig.period=100000"]  # fmt: skip
    command = [sys.executable, "-m", "textchem_jax.sweep", *flags]
    launched = time.monotonic()
    process = subprocess.Popen([*command, "--gin.TRAIN_STEPS=100000"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    child = None
    try:
        for line in process.stdout:
            if line.strip().startswith("step 1/"):  # the first step's line: the only one before step 100000
                break
        (child,) = _children(process.pid)
        process.kill()
        killed_after = time.monotonic() - launched
        process.wait()
        for _ in range(600):
            if not _alive(child):
                break
            time.sleep(0.5)
        assert not _alive(child), "textchem-train trains on after the sweep was killed"
    finally:
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)
    point = tmp_path / "width-32"
    saved = sorted(int(p.name) for p in (point / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] >= 1, "the point did not save its step"
    killed = json.loads((point / sweep.POINT_FILE).read_text())  # the sweep died unawares: "running"
    assert killed["status"] == "running" and 0 < killed["wall_seconds"] < killed_after, killed

    rerun = subprocess.Popen([*command, f"--gin.TRAIN_STEPS={saved[-1] + 1}"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    output = []
    for line in rerun.stdout:
        output.append(line)
        if ": training (log:" in line:
            running = json.loads((point / sweep.POINT_FILE).read_text())
    assert rerun.wait() == 0, "".join(output)[-3000:]
    assert f"resumed from step {saved[-1]} " in "".join(output)
    assert running["status"] == "running" and running["wall_seconds"] >= killed["wall_seconds"], running
    done = json.loads((point / sweep.POINT_FILE).read_text())
    assert done["status"] == "done" and done["wall_seconds"] > running["wall_seconds"]


def test_a_run_stopped_in_the_middle_of_a_write_is_read_up_to_the_cut(tmp_path, caplog):
    """A preempted or still running MODEL_DIR: its last event record and metrics line cut short ended
    textchem-report and textchem-sweep in a DataLossError / JSONDecodeError; now what precedes the cut is read."""
    import tensorflow as tf

    from textchem_jax import run_results

    with tf.summary.create_file_writer(str(tmp_path / "train")).as_default():
        for step in range(1, 11):
            tf.summary.scalar("loss", 1.0 / step, step=step)
    (events,) = (tmp_path / "train").iterdir()
    events.write_bytes(events.read_bytes()[:-5])  # the last record loses its end
    folder = tmp_path / "inference_eval"
    folder.mkdir()
    (folder / "textchem_demo_forward-metrics.jsonl").write_text('{"step": 2, "accuracy": 0.5}\n{"step": 4, "accur')
    (folder / "textchem_demo_forward-000002.jsonl").write_text('{"prediction": "CCO", "target": "CCO"}\n{"predic')

    loss = run_results.scalars(str(tmp_path / "train"))["loss"]
    assert [step for step, _ in loss] == list(range(1, 10)) and loss[0] == (1, 1.0)
    assert run_results.metric_history(str(tmp_path)) == {"textchem_demo_forward": [{"step": 2, "accuracy": 0.5}]}
    assert run_results.predictions(str(tmp_path), "textchem_demo_forward", 2) == [{"prediction": "CCO", "target": "CCO"}]
    assert f"{events}: record 11 is cut short or damaged; the 10 before it are read" in caplog.text  # 1 + 10 scalars
    assert "textchem_demo_forward-metrics.jsonl: skipped 1 line(s) that are not JSON (line 2)" in caplog.text


def test_teacher_forced_scalars_are_read_from_t5xs_layout_and_from_runs_written_before_it(tmp_path):
    import tensorflow as tf

    from textchem_jax import run_results

    def write(folder, points):
        with tf.summary.create_file_writer(str(folder)).as_default():
            for tag, step, value in points:
                tf.summary.scalar(tag, value, step=step)

    write(tmp_path / "old" / "train", [("loss", 2, 3.0), ("eval/loss", 2, 4.0), ("eval/accuracy", 2, 0.5)])
    assert run_results.teacher_forced_scalars(str(tmp_path / "old")) == {"loss": [(2, 4.0)], "accuracy": [(2, 0.5)]}
    write(tmp_path / "new" / "training_eval" / "mix_a", [("loss", 2, 4.0), ("loss", 4, 3.5)])
    write(tmp_path / "new" / "training_eval" / "mix_b", [("loss", 6, 2.5)])  # evaluated last: a resume's mixture
    assert run_results.teacher_forced_scalars(str(tmp_path / "new")) == {"loss": [(6, 2.5)]}
    assert run_results.teacher_forced_scalars(str(tmp_path / "new"), "mix_a") == {"loss": [(2, 4.0), (4, 3.5)]}
    # a run resumed across the change: its earlier points kept, the new layout's winning a step both have
    write(tmp_path / "old" / "training_eval" / "mix", [("loss", 2, 3.9), ("loss", 6, 2.5)])
    resumed = run_results.teacher_forced_scalars(str(tmp_path / "old"))
    assert resumed == {"loss": [(2, pytest.approx(3.9)), (6, 2.5)], "accuracy": [(2, 0.5)]}
    assert run_results.teacher_forced_scalars(str(tmp_path / "none")) == {}


def test_teacher_forced_scalars_of_a_t5x_run_are_its_mixtures_not_the_first_tasks(tmp_path):
    """T5X writes training_eval/<task>/ for each task of the mixture beside the mixture's, all at the same steps:
    without a name the first folder listed was taken (the quickstart's report showed mol2text's 1259.3 as its 608.5).
    Now the run's config.gin names the mixture, and without one the tie is an error, not a pick."""
    import tensorflow as tf

    from textchem_jax import run_results

    for folder, loss in (("mix_mol2text", 1259.3), ("mix", 608.5), ("mix_forward", 357.8), ("mix_text2mol", 157.8)):
        with tf.summary.create_file_writer(str(tmp_path / "training_eval" / folder)).as_default():
            tf.summary.scalar("loss", loss, step=3)
    with pytest.raises(ValueError, match=r"mix, mix_forward, mix_mol2text, mix_text2mol were all evaluated last "
                                         r"\(step 3\) and the run has no config\.gin naming its mixture"):  # fmt: skip
        run_results.teacher_forced_scalars(str(tmp_path))
    assert run_results.teacher_forced_scalars(str(tmp_path), "mix_forward") == {"loss": [(3, pytest.approx(357.8))]}
    # T5X's config.gin (the train_eval DatasetConfig's mixture, through its macro), then one binding the mixture only
    (tmp_path / "config.gin").write_text(
        "MIXTURE_OR_TASK_NAME = 'mix'\ntrain_eval/utils.DatasetConfig.mixture_or_task_name = %MIXTURE_OR_TASK_NAME\n"
    )
    assert run_results.teacher_forced_scalars(str(tmp_path)) == {"loss": [(3, pytest.approx(608.5))]}
    (tmp_path / "config.gin").write_text("MIXTURE_OR_TASK_NAME = 'mix_text2mol'\n")
    assert run_results.teacher_forced_scalars(str(tmp_path)) == {"loss": [(3, pytest.approx(157.8))]}


def test_config_binding_follows_macros_and_keeps_gin_constants_as_written():
    from textchem_jax.run_results import config_binding

    config = ("LOSS_NORMALIZING_FACTOR = None\nA = %B\nB = 'NUM_REAL_TARGET_TOKENS'\nC = %A\n"
              "models.EncoderDecoderModel.loss_normalizing_factor = %LOSS_NORMALIZING_FACTOR\n"
              "LOSS_NORMALIZING_FACTOR = 233472\n"  # the last binding wins, as in gin
              "x.y = %losses.SpecialLossNormalizingFactor.AVERAGE_PER_SEQUENCE\nD = %D\n")  # fmt: skip
    assert config_binding(config, r"[\w.]*\.loss_normalizing_factor") == 233472
    assert config_binding(config, "C") == "NUM_REAL_TARGET_TOKENS"
    assert config_binding(config, "x.y") == "%losses.SpecialLossNormalizingFactor.AVERAGE_PER_SEQUENCE"
    assert config_binding(config, "D") == "%D" and config_binding(config, "E") is None


def test_report_plots_the_loss_per_real_target_token_of_t5x_and_our_runs(tmp_path):
    """T5X's `loss` is each batch's sum under its default LOSS_NORMALIZING_FACTOR (None), where the per-token figure
    is `loss_per_nonpadding_target_token` (608.5 against 5.80 on the quickstart's validation); under
    'NUM_REAL_TARGET_TOKENS' (gin_configs/t5x) `loss` is per token, as ours always is. The report plotted `loss`."""
    import tensorflow as tf

    from textchem_jax import report

    t5x = {"loss": [(3, 608.5)], "loss_per_nonpadding_target_token": [(3, 5.80)], "accuracy": [(3, 0.18)]}
    t5x_config = ("LOSS_NORMALIZING_FACTOR = {}\n"
                  "models.EncoderDecoderModel.loss_normalizing_factor = %LOSS_NORMALIZING_FACTOR\n")  # fmt: skip
    assert report.per_token_loss(t5x, t5x_config.format("None")) == [(3, 5.80)]
    assert report.per_token_loss(t5x, "") == [(3, 5.80)]  # T5X's default, unbound
    assert report.per_token_loss(t5x, t5x_config.format("'NUM_REAL_TARGET_TOKENS'")) == [(3, 608.5)]
    enum = "%losses.SpecialLossNormalizingFactor.NUM_REAL_TARGET_TOKENS"
    assert report.per_token_loss(t5x, t5x_config.format(enum)) == [(3, 608.5)]
    assert report.per_token_loss(t5x, t5x_config.format("233472")) is None  # a constant: neither is per token
    assert report.per_token_loss({"loss": [(3, 5.9)], "accuracy": [(3, 0.2)]}, "") == [(3, 5.9)]  # ours

    # a T5X run with a constant factor: the page says why its loss is not plotted
    for folder, points in (("train", t5x), ("training_eval/mix", t5x)):
        with tf.summary.create_file_writer(str(tmp_path / folder)).as_default():
            for tag, [(step, value)] in points.items():
                tf.summary.scalar(tag, value, step=step)
    (tmp_path / "config.gin").write_text("MIXTURE_OR_TASK_NAME = 'mix'\n" + t5x_config.format("233472"))
    assert report.main([str(tmp_path)]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "T5X&#x27;s LOSS_NORMALIZING_FACTOR = 233472: its loss is not per real target token" in page


def test_report_groups_rdkit_reasons():
    from textchem_jax.chem import canonicalize_with_reason
    from textchem_jax.report import error_kind

    kinds = {smiles: error_kind(canonicalize_with_reason(smiles)[1]) for smiles in
             ("C1CC", "CC(C", "CC)C", "C(C)(C)(C)(C)C", "c1cccc1", "", "C%")}  # fmt: skip
    assert kinds == {"C1CC": "ring closure", "CC(C": "parentheses", "CC)C": "parentheses", "C(C)(C)(C)(C)C": "valence",
                     "c1cccc1": "kekulization", "": "empty", "C%": "syntax"}  # fmt: skip


def test_report_help_names_every_folder_it_reads(capsys):
    """--help named a MODEL_DIR and a SWEEP_DIR only, though a textchem-eval output folder makes a page too."""
    from textchem_jax import report

    with pytest.raises(SystemExit):
        report.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "textchem-eval output" in shown.split("positional arguments:")[0]  # the description
    assert "a textchem-train MODEL_DIR, a textchem-eval output folder (its EVAL_OUTPUT_DIR) or a textchem-sweep SWEEP_DIR" in shown


@pytest.mark.slow
@pytest.mark.xdist_group("studies")
def test_cpu_sweep_writes_tables_and_plots_and_skips_finished_points(cpu_sweep, capsys, tmp_path):
    from textchem_jax import run_results

    directory, first = cpu_sweep
    assert "[1/2] width=32 mixture=standard: training" in first.stdout and "[2/2] width=32 mixture=cross: done" in first.stdout
    with open(directory / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["width"], r["mixture"], r["status"], r["steps"]) for r in rows] == [("32", "standard", "done", "20"),
                                                                                    ("32", "cross", "done", "20")]  # fmt: skip
    for row in rows:
        model_info = (directory / row["point"] / "model-info.txt").read_text()
        assert int(row["params"]) == sum(int(s.replace(",", "")) for s in re.findall(r"size\s+([\d,]+)", model_info))
        assert float(row["tokens_seen"]) > 20 * 8 and float(row["wall_seconds"]) > 0
    standard, cross = rows
    # the standard mixture has all five tasks, the cross-domain one only text2mol and mol2text: its other cells are empty
    assert standard["forward/accuracy"] != "" and cross["forward/accuracy"] == ""
    last = json.loads((directory / cross["point"] / "inference_eval" / "textchem_demo_mol2text-metrics.jsonl").read_text().splitlines()[-1])
    assert float(cross["mol2text/rouge2"]) == pytest.approx(last["rouge2"])
    held_out = run_results.teacher_forced_scalars(str(directory / cross["point"]))["loss"]  # training_eval/<mixture>
    assert float(cross["final_eval_loss"]) == pytest.approx(held_out[-1][1]) and held_out[-1][0] == 20
    assert "| n/a |" in (directory / "sweep.md").read_text()
    for stem in ("text2mol_vs_params", "mol2text_vs_tokens", "forward_vs_params", "loss_curves", "multitask_gain"):
        assert (directory / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (directory / f"{stem}.svg").read_bytes()[:2000]

    assert "TensorFlow" not in first.stderr and "cuda" not in first.stderr  # the console is for people

    capsys.readouterr()
    for point in ("--point=0", "--point=1"):  # the rerun, a job per point, in this process (the fixture collected)
        assert sweep.main([f"--sweep_dir={directory}", point, *SWEEP_FLAGS]) == 0
    again = capsys.readouterr().out
    assert again.count("finished before, skipped") == 2 and "training (log:" not in again
    assert sweep.main([f"--sweep_dir={directory}", "--dry_run", "--point=1", *SWEEP_FLAGS]) == 0
    printed = capsys.readouterr().out.splitlines()[-1]
    assert printed.startswith("[1] width=32 mixture=cross: textchem-train ")
    assert "--gin.MIXTURE_OR_TASK_NAME='textchem_demo_cross'" in shlex.split(printed.split("textchem-train ", 1)[1])

    copy = tmp_path / "copy"  # a sweep copied or moved is the same sweep: its MODEL_DIRs are not settings
    shutil.copytree(directory, copy)
    assert sweep.main([f"--sweep_dir={copy}", "--point=0", *SWEEP_FLAGS]) == 0
    assert "finished before, skipped" in capsys.readouterr().out
    # Other settings for a trained point resumed its weights under them and recorded it as done with them.
    record = (copy / "width-32_mixture-standard" / "sweep-point.json").read_text()
    assert sweep.main([f"--sweep_dir={copy}", "--point=0", *SWEEP_FLAGS, "--gin.LEARNING_RATE=1e-4"]) == 2
    assert "with other arguments (no other flags then, --gin.LEARNING_RATE=1e-4 now)" in capsys.readouterr().err
    assert (copy / "width-32_mixture-standard" / "sweep-point.json").read_text() == record
    assert sweep.main([f"--sweep_dir={tmp_path / 'none'}", "--collect_only", *SWEEP_FLAGS]) == 2  # was a NotFoundError
    assert "no sweep at" in capsys.readouterr().err

    from textchem_jax import provenance  # each point's versions, recorded when it trained, against the collector's

    assert "Tables written with versions: jax " in (copy / "sweep.md").read_text()
    point = copy / "width-32_mixture-cross"
    entries = provenance.history(str(point))
    assert entries and entries[-1]["versions"] == provenance.versions()
    entries[-1]["versions"]["rdkit"] = "2023.9.1"
    (point / provenance.FILE).write_text(json.dumps(entries))
    capsys.readouterr()
    assert sweep.main([f"--sweep_dir={copy}", "--collect_only", *SWEEP_FLAGS]) == 0
    assert "Points trained with other versions: width-32_mixture-cross: rdkit 2023.9.1" in (copy / "sweep.md").read_text()


@pytest.mark.slow
@pytest.mark.xdist_group("studies")
def test_robustness_then_report_of_a_run_render_in_chromium(cpu_sweep, tmp_path, capsys, caplog):
    directory, _ = cpu_sweep
    run = directory / "width-32_mixture-standard"
    from textchem_jax import report, robustness

    # Targets cut are said once per task: a notation rewrites inputs only (it was said again for each of them)
    assert robustness.main([f"--model_dir={run}", "--split=validation", "--num_examples=2", "--random_variants=1",
                            "--no_embedding_check", "--task_feature_lengths=inputs=96,targets=4",
                            f"--output_dir={tmp_path / 'cut'}"]) == 0  # fmt: skip
    cut = [r.getMessage() for r in caplog.records if "have targets longer than 4 tokens" in r.getMessage()]
    assert sorted(line.split(":")[0] for line in cut) == ["textchem_demo_forward", "textchem_demo_mol2text", "textchem_demo_retro"], cut
    assert all(line.endswith("Raise --task_feature_lengths=targets=N to keep them whole.") for line in cut), cut  # its flag

    assert robustness.main([f"--model_dir={run}", "--split=validation", "--num_examples=6", "--random_variants=1"]) == 0
    saved = (run / "robustness" / "robustness.json").read_bytes()
    capsys.readouterr()
    # A misspelt split evaluated nothing, exited 0 and wrote an empty robustness.json over these results.
    assert robustness.main([f"--model_dir={run}", "--split=valid", "--num_examples=6"]) == 2
    assert "no task of textchem_demo_standard has a split 'valid'" in capsys.readouterr().err
    assert (run / "robustness" / "robustness.json").read_bytes() == saved
    results = json.loads(saved)
    assert sorted(results["metrics"]) == ["textchem_demo_forward", "textchem_demo_mol2text", "textchem_demo_retro"]
    assert results["unreadable_inputs"] == dict.fromkeys(results["metrics"], 0)  # the demo corpus is valid chemistry
    variants = ["original", "canonical", "kekulized", "explicit_h", "rings_renumbered", "random_0"]
    for task, by_variant in results["metrics"].items():
        assert list(by_variant) == variants
        assert set(by_variant["explicit_h"]) == set(by_variant["original"])  # every metric, per notation
        scores = results["embedding"][task]
        assert list(scores) == variants[1:] and all(0 <= s["acc@1"] <= s["acc@5"] <= 1 for s in scores.values())
        assert scores["rings_renumbered"]["unchanged"] == 0.0  # every rewritten input differs from the split's
    # The rewritten inputs the model read are the same molecules as the originals, example for example.
    evaluated = run / "robustness" / "inference_eval"
    step = results["checkpoint_step"]
    read = lambda name: [json.loads(l)["input"]["inputs_pretokenized"].split(": ", 1)[1] for l in (evaluated / f"{name}-{step:06d}.jsonl").read_text().splitlines()]  # noqa: E731
    originals, explicit_h = read("textchem_demo_mol2text"), read("textchem_demo_mol2text_notation_explicit_h")
    assert len(originals) == 6 and all(canonicalize(a) == canonicalize(b) and "[H]" in b for a, b in zip(originals, explicit_h))

    assert report.main([str(run)]) == 0
    page = run / "report" / "index.html"
    reason = chromium.missing()
    if reason:
        pytest.skip(reason)
    seen = chromium.render(str(page), str(tmp_path / "report.png"))
    assert not seen["errors"]
    assert len(seen["images"]) >= 2 + 6 * 2  # curves, and depictions of inputs, targets and predictions
    assert all(i["complete"] and i["width"] > 50 and i["height"] > 50 and i["inline"] for i in seen["images"])
    final = {}
    for name in ("textchem_demo_text2mol", "textchem_demo_forward"):
        rows = (run / "inference_eval" / f"{name}-metrics.jsonl").read_text().splitlines()
        final[name] = json.loads(rows[-1])
    cells = {tuple(row) for table in seen["tables"] for row in table}
    assert ("validity", f"{final['textchem_demo_text2mol']['validity']:.4f}") in cells
    assert ("invalid_rate", f"{final['textchem_demo_forward']['invalid_rate']:.4f}") in cells
    mol2text = results["metrics"]["textchem_demo_mol2text"]
    table = next(t for t in seen["tables"] if t[0][:2] == ["notation", "bleu2"])
    assert table[1][:2] == ["original", f"{mol2text['original']['bleu2']:.4f}"]
    drop = mol2text["original"]["bleu2"] - mol2text["kekulized"]["bleu2"]
    assert table[3][:2] == ["kekulized", f"{mol2text['kekulized']['bleu2']:.4f} (drop {tables.number(drop)})"]  # no -0.0000
    assert "Invalid SMILES by RDKit's reason" in seen["text"] and "rdkit" in seen["text"]
    assert os.path.getsize(tmp_path / "report.png") > 10_000

    assert report.main([str(directory)]) == 0
    sweep_page = chromium.render(str(directory / "report" / "index.html"), str(tmp_path / "sweep.png"))
    assert len(sweep_page["images"]) >= 5 and all(i["complete"] and i["width"] > 100 for i in sweep_page["images"])
    header = sweep_page["tables"][0][0]
    assert header[:3] == ["point", "width", "mixture"] and len(sweep_page["tables"][0]) == 3


@pytest.mark.slow
@pytest.mark.xdist_group("studies")
def test_textchem_eval_reports_metrics_per_notation(cpu_sweep, tmp_path, capsys, monkeypatch):
    """Over every step (CHECKPOINT_STEPS='all'), one notation evaluator decodes them all: one was built, and its
    decoding compiled, at every step."""
    from textchem_jax import evaluate, evaluator, launch
    from textchem_jax.run_config import DatasetConfig

    built = []
    build = evaluator.InferenceEvaluator.__init__
    monkeypatch.setattr(evaluator.InferenceEvaluator, "__init__",
                        lambda self, *args, **kwargs: (built.append(args[1]), build(self, *args, **kwargs))[1])

    directory, _ = cpu_sweep
    run = tmp_path / "run"
    shutil.copytree(directory / "width-32_mixture-cross", run)
    shutil.copytree(run / "checkpoints" / "20", run / "checkpoints" / "10")  # a second step to evaluate
    saved = launch.saved_run(str(run))
    cfg = DatasetConfig("textchem_demo_cross", dict(saved.task_feature_lengths), "validation", 8, shuffle=False, pack=False,
                        num_examples=4)  # fmt: skip
    evaluate.evaluate(model=saved.model, checkpoint_path=str(run), dataset_cfg=cfg, output_dir=str(tmp_path),
                      notations=["kekulized", "random_0"], checkpoint_steps="all")  # fmt: skip
    assert [cfg.mixture_or_task_name for cfg in built] == ["textchem_demo_cross", "textchem_demo_cross_notations"]
    for step in (10, 20):
        assert (tmp_path / "notations" / f"textchem_demo_mol2text_notation_kekulized-{step:06d}.jsonl").exists()
    printed = capsys.readouterr().out
    assert "**textchem_demo_mol2text**" in printed and "| kekulized | " in printed and "| random_0 | " in printed
    assert "\ntextchem_demo_mol2text (4 examples)\n" in printed  # the table says what it was scored on
    assert "text2mol" not in printed.split("**textchem_demo_mol2text**")[1].split("evaluating step")[0]  # text input
    rows = (tmp_path / "notations" / "textchem_demo_mol2text_notation_random_0-000020.jsonl").read_text().splitlines()
    assert len(rows) == 4


def test_report_of_a_run_not_yet_evaluated_says_so(tmp_path, monkeypatch):
    """A run with its config.gin only: the page said 'final evaluation at step None' and 'one inference evaluation so far'.
    Given as `.`, the run is named by its folder in the title (it read `Text+Chem T5 run .`)."""
    from textchem_jax import report

    (tmp_path / "config.gin").write_text("MODEL_DIR = 'run'\n")
    monkeypatch.chdir(tmp_path)
    assert report.main(["."]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "no inference evaluation yet" in page and "None" not in page and "evaluation so far" not in page
    assert f"<title>Text+Chem T5 run {tmp_path}</title>" in page


def test_metric_panels_read_as_values_steps_and_n_a():
    """Sweep and run pages showed a flat metric as an offset ('+0.5' over 1e-16 ticks), steps as 19.25, and a
    metric n/a at every point as an empty frame."""
    from textchem_jax import figures

    figure = figures.line_figure({"forward/accuracy": {"": [(19, 0.5), (20, 0.5 + 1e-16)]},
                                  "mol2text/meteor": {"": [(19, None), (20, float("nan"))]}}, xlabel="step")  # fmt: skip
    figure.canvas.draw()
    flat, missing = figure.axes[:2]
    assert flat.yaxis.get_offset_text().get_text() == "" and all(float(t.get_text()).is_integer() for t in flat.get_xticklabels())
    assert [t.get_text() for t in missing.texts] == ["n/a"] and not [t.get_text() for t in flat.texts]


def test_report_puts_paper_numbers_beside_the_papers_test_sets_only():
    from textchem_jax.report import paper_columns

    papers = paper_columns("textchem_mol2text", "test")
    assert papers["Text+Chem T5-base-augm"]["rouge2"] == 0.543 and papers["MolT5-large"]["bleu2"] == 0.594
    assert paper_columns("textchem_gt4sd_eval_paragraph2actions", "test") == {"Text+Chem T5-small-standard": {"bleu2": 0.929}}
    assert paper_columns("textchem_demo_mol2text", "test") == {}  # the demo corpus is not ChEBI-20
    assert paper_columns("textchem_mol2text", "validation") == {} and paper_columns("my_task", "test") == {}


def test_molecule_grid_depicts_every_beam_with_validity_and_similarity():
    from textchem_jax.report import molecule_grid

    row = {"input": {"inputs_pretokenized": "Predict the product of the following reaction: CCO.CC(=O)O"},
           "target": "CCOC(C)=O", "prediction": ["CCOC(C)=O", "CCOC(=O)C(C", "CCOC"]}  # fmt: skip
    html = molecule_grid("forward", [row])
    assert "<th>beam 1</th><th>beam 2</th><th>beam 3</th>" in html
    assert html.count("data:image/png;base64,") == 2 + 2  # input, target, the two beams RDKit reads
    assert "valid, Tanimoto 1.00" in html and "invalid" in html and "<code>CCO.CC(=O)O</code>" in html


def test_molecule_grid_and_invalid_breakdown_judge_each_prediction_by_its_tasks_metric():
    """An empty prediction read "not a molecule RDKit reads" then "valid, Tanimoto 0.00" in the forward, retro and
    text2mol grids alike (text2mol's MolT5 rule for every task), beside forward's invalid_rate 1.0; the breakdown
    counted text2mol's empty predictions invalid beside its validity 1.0."""
    from textchem_jax.metrics.molecules import text2mol_metrics
    from textchem_jax.metrics.reactions import forward_metrics
    from textchem_jax.report import invalid_breakdown, molecule_grid

    def cells(html: str) -> list[str]:
        return re.findall(r"<td>(.*?)</td>", html)

    forward = {"input": {"inputs_pretokenized": "CCO.CC(=O)O"}, "target": "CCOC(C)=O", "prediction": ["", "CCOC(=O)C(C"]}
    assert forward_metrics(["CCOC(C)=O"], [forward["prediction"]])["invalid_rate"] == 1.0
    for task in ("forward", "retro"):
        empty, unreadable = cells(molecule_grid(task, [forward]))[2:]
        assert empty == "<i>empty prediction</i><br><code></code><br>invalid"
        assert unreadable.startswith("<i>not a molecule RDKit reads</i>") and unreadable.endswith("<br>invalid")
        assert invalid_breakdown(task, [forward]) == {"valid": 0, "empty": 1}

    text2mol = {"input": {"inputs_pretokenized": "The molecule is ethyl acetate."}, "target": "CCOC(C)=O", "prediction": ""}
    assert text2mol_metrics(["CCOC(C)=O"], [""])["validity"] == 1.0  # MolT5's rule: RDKit reads "" as no atoms
    empty = cells(molecule_grid("text2mol", [text2mol]))[2]
    assert empty == "<i>empty prediction</i><br><code></code><br>valid by MolT5&#x27;s rule (an empty string counts), Tanimoto 0.00"
    assert invalid_breakdown("text2mol", [text2mol]) == {"valid": 1}
    for html in (molecule_grid(t, [forward, text2mol]) for t in ("forward", "retro", "text2mol")):
        assert not any("not a molecule RDKit reads" in c and "valid," in c for c in cells(html))


def _write_evaluations(folder, evaluations, config="run_config.DatasetConfig.split = 'test'\n"):
    """A textchem-eval output folder by hand: config.gin, and per (task, step, metrics, examples) the metrics line
    and that many prediction rows, as seqio's JSONLogger writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.gin").write_text(config)
    evaluated = folder / "inference_eval"
    evaluated.mkdir(exist_ok=True)
    for task, step, metrics, examples in evaluations:
        with open(evaluated / f"{task}-metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        row = {"input": {"inputs_pretokenized": "Caption the following SMILES: CCO"},
               "target": "The molecule is ethanol.", "prediction": "The molecule is an alcohol."}  # fmt: skip
        (evaluated / f"{task}-{step:06d}.jsonl").write_text((json.dumps(row) + "\n") * examples)
    return folder


def test_report_of_an_evaluation_folder_shows_each_tasks_last_step_and_its_test_split(tmp_path):
    """Tasks evaluated by separate textchem-eval runs at different checkpoints (README's released-checkpoint loop):
    mol2text, last evaluated at step 15, vanished from the page (only rows at the largest step, 30, were kept). The
    folder binds the unscoped DatasetConfig split (runs/eval.gin): the page said "not the paper's test set", printed
    no split without model-info.txt, and gave a folder without training "Training curves" and eval_period advice."""
    from textchem_jax import report, run_results

    text2mol = {"bleu": 0.1, "exact_match": 0.0, "levenshtein": 170.16666666666666, "validity": 1.0}
    folder = _write_evaluations(tmp_path / "eval", [("textchem_mol2text", 15, {"bleu2": 0.0623, "rouge2": 0.0766}, 6),
                                                    ("textchem_text2mol", 30, text2mol, 6)])  # fmt: skip
    history = run_results.metric_history(str(folder))
    assert sorted(run_results.last_evaluations(history)) == ["textchem_mol2text", "textchem_text2mol"]
    assert run_results.final_metrics(history) == (30, {"textchem_text2mol": text2mol})  # a sweep row's one step

    assert report.main([str(folder)]) == 0
    page = (folder / "report" / "index.html").read_text()
    assert "evaluated at each task&#x27;s own step (textchem_mol2text 15, textchem_text2mol 30)" in page
    assert "inference evaluation split: test" in page and "not the paper&#x27;s test set" not in page
    assert "<h3>textchem_mol2text (6 examples)</h3>" in page and "<th>this run (step 15)</th>" in page
    assert '<td class="num">0.0623</td>' in page
    assert "textchem_mol2text: first 6 of 6 examples, step 15" in page  # its predictions, read at its own step
    assert "<td>levenshtein (characters)</td><td class=\"num\">170.17</td>" in page  # not 170.1667, like a fraction
    assert "Training curves" not in page and "eval_period" not in page
    assert not (folder / "report" / "loss_curves.png").exists()

    # review: an evaluation folder whose config.gin binds TRAIN_STEPS (an experiment gin, the run's own config.gin)
    # was "at step 0 of 100000 (still training)"; and a user's own figure files in --output_dir were deleted
    trained_gin = _write_evaluations(tmp_path / "eval2", [("textchem_text2mol", 30, text2mol, 6)],
                                     config="TRAIN_STEPS = 100000\nrun_config.DatasetConfig.split = 'test'\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "loss_curves.png").write_bytes(b"the user's")
    assert report.main([str(trained_gin), f"--output_dir={mine}"]) == 0
    page = (mine / "index.html").read_text()
    assert "evaluated at step 30" in page and "still training" not in page and "Training curves" not in page
    assert (mine / "loss_curves.png").read_bytes() == b"the user's"


def test_report_of_an_evaluation_folder_names_the_checkpoint_to_measure_robustness_and_why_no_paper_numbers(tmp_path):
    """A textchem-eval folder's page said "run textchem-robustness --model_dir=EVAL", which fails (the folder holds no
    checkpoint), and called forward and retro on the USPTO test splits "not the paper's test set" when the catalogue
    holds no paper numbers for them."""
    from textchem_jax import provenance, report

    folder = _write_evaluations(tmp_path / "eval", [("textchem_gt4sd_eval_forward", 0, {"accuracy": 0.0}, 3),
                                                    ("textchem_gt4sd_eval_retro", 0, {"accuracy": 0.0}, 3)])  # fmt: skip
    (folder / provenance.FILE).write_text(json.dumps([{"command": "textchem-eval", "checkpoint": "/models/old", "step": 0},
                                                      {"command": "textchem-eval", "checkpoint": "/models/p v11",
                                                       "step": 0, "split": "test"}]))  # fmt: skip
    assert report.main([str(folder)]) == 0
    page = (folder / "report" / "index.html").read_text()
    assert (f"not measured: run textchem-robustness --model_dir={folder} --checkpoint_path=&#x27;/models/p v11&#x27; "
            f"--split=test --output_dir={folder / 'robustness'}") in page  # fmt: skip
    assert "not the paper&#x27;s test set" not in page
    for task in ("forward", "retro"):
        assert f"no paper numbers: catalogue.PAPER_RESULTS holds none for {task}" in page

    bound = _write_evaluations(tmp_path / "bound", [("textchem_gt4sd_eval_forward", 0, {"accuracy": 0.0}, 3)],
                               config="CHECKPOINT_PATH = '/models/run'\neval_lib.evaluate.checkpoint_path = %CHECKPOINT_PATH\n"
                                      "run_config.DatasetConfig.split = 'validation'\n")  # fmt: skip
    unknown = _write_evaluations(tmp_path / "unknown", [("textchem_gt4sd_eval_forward", 0, {"accuracy": 0.0}, 3)])
    assert report.main([str(bound)]) == 0 and report.main([str(unknown)]) == 0
    page = (bound / "report" / "index.html").read_text()
    assert (f"--model_dir={bound} --checkpoint_path=/models/run --split=validation --output_dir={bound / 'robustness'}"
            in page)  # from config.gin where provenance.json records no checkpoint
    page = (unknown / "report" / "index.html").read_text()
    assert f"{unknown} records no checkpoint it evaluated: run textchem-robustness with --model_dir set to" in page
    assert f"--model_dir={unknown}" not in page

    assert report.no_paper_numbers("textchem_demo_mol2text", "test") == (
        "the demo corpus, not the paper's test set: no paper numbers beside it")
    assert report.no_paper_numbers("textchem_mol2text", "validation") == (
        "the validation split, not the paper's test set: no paper numbers beside it")
    assert report.no_paper_numbers("my_task", "test") == "a task of your own: no paper numbers"


def test_tables_print_a_value_that_rounds_to_zero_without_a_sign():
    """A mol2text robustness table read "0.0000 (drop -0.0000)": BLEU's zero-overlap floor (1e-155) rose."""
    from textchem_jax.metrics.tables import number, robustness_tables

    assert [number(v) for v in (-1e-155, -0.00004, -0.0, -0.00005001, 0.00004, None, math.nan)] == [
        "0.0000", "0.0000", "0.0000", "-0.0001", "0.0000", "n/a", "n/a"]
    metrics = {"original": {"bleu2": 1.0511472842783072e-155, "invalid_rate": 0.1 + 0.2},
               "canonical": {"bleu2": 1.6619846870429299e-155, "invalid_rate": 0.3}}  # an increase of -5.6e-17
    (_, header, rows), = robustness_tables({"metrics": {"textchem_gt4sd_eval_mol2text": metrics}})
    assert rows[1] == ["canonical", "0.0000 (drop 0.0000)", "0.3000 (drop 0.0000)"]


def test_report_puts_paper_numbers_beside_an_evaluation_of_the_whole_test_set_only(tmp_path):
    """Paper numbers were shown beside any test-split evaluation of a paper task: 10 of ChEBI-20's 3,300 rows, or
    paragraph2actions' 10-sentence public sample (the paper's test set was not released)."""
    from textchem_jax import report

    assert report.not_comparable_with_paper("textchem_text2mol", 3_300) is None
    assert report.not_comparable_with_paper("textchem_gt4sd_eval_mol2text", 10) == (
        "evaluated on 10 of 3,300 test examples: not comparable with the paper")
    assert "was not released" in report.not_comparable_with_paper("textchem_gt4sd_eval_paragraph2actions", 10)

    metrics = {"bleu2": 0.61, "rouge2": 0.52, "rougeL": 0.6, "meteor": None}
    whole = _write_evaluations(tmp_path / "whole", [("textchem_gt4sd_eval_mol2text", 7, metrics, 3_300)])
    part = _write_evaluations(tmp_path / "part", [("textchem_gt4sd_eval_mol2text", 7, metrics, 10),
                                                  ("textchem_gt4sd_eval_paragraph2actions", 7, {"bleu2": 0.5}, 10)],
                              config="infer_eval/run_config.DatasetConfig.split = 'test'\n")  # a training run's binding
    assert report.main([str(whole)]) == 0 and report.main([str(part)]) == 0
    shown, refused = ((folder / "report" / "index.html").read_text() for folder in (whole, part))
    assert "<h3>textchem_gt4sd_eval_mol2text (3,300 examples)</h3>" in shown
    assert "<th>Text+Chem T5-base-augm (paper)</th>" in shown
    # rougeL: 0.6 here, not in base-standard's published row ("—"), 0.622 in base-augm's; meteor not computable (n/a)
    assert '<td>rougeL</td><td class="num">0.6000</td><td class="num">—</td><td class="num">0.6220</td>' in shown
    assert '<td>meteor</td><td class="num">n/a</td>' in shown
    assert "(paper)" not in refused and "0.9290" not in refused
    assert "evaluated on 10 of 3,300 test examples: not comparable with the paper" in refused
    assert "the paper&#x27;s paragraph2actions test set was not released" in refused


def test_report_of_an_unfinished_run_then_again_without_evaluations(tmp_path):
    """A run at step 20 of TRAIN_STEPS 40 was labelled "final evaluation"; a second report into the same folder left
    the first one's metric curves there, beside a page that no longer showed them (files not ours are kept)."""
    import tensorflow as tf

    from textchem_jax import report

    config = "TRAIN_STEPS = 40\ninfer_eval/run_config.DatasetConfig.split = 'validation'\n"
    run = _write_evaluations(tmp_path / "run", [("textchem_demo_forward", 20, {"accuracy": 0.5}, 2)], config=config)
    (run / "checkpoints" / "20").mkdir(parents=True)
    with tf.summary.create_file_writer(str(run / "train")).as_default():
        tf.summary.scalar("loss", 5.0, step=10)
        tf.summary.scalar("loss", 4.0, step=20)
    assert report.main([str(run)]) == 0
    output = run / "report"
    page = (output / "index.html").read_text()
    assert "latest evaluation at step 20; the run is at step 20 of 40 (still training, or stopped)" in page
    assert "final evaluation" not in page and "<h2>Metrics of the latest evaluation</h2>" in page
    assert (output / "metric_curves.png").exists() and (output / "loss_curves.svg").exists()
    (output / "mine.png").write_bytes(b"not the report's")

    shutil.rmtree(run / "inference_eval")
    assert report.main([str(run)]) == 0
    assert sorted(p.name for p in output.iterdir()) == ["index.html", "loss_curves.png", "loss_curves.svg", "mine.png"]


def test_sweep_report_written_into_the_sweep_keeps_its_plots_and_shows_each_points_versions(tmp_path, capsys):
    """`textchem-report SWEEP --output_dir=SWEEP` copied each PNG onto itself, which emptied it (exit 0); the page's
    versions were only its own, not those each point was trained with."""
    from textchem_jax import figures, provenance, report

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "sweep.csv").write_text("point,width,status\nw-32,32,done\nw-64,64,done\nw-128,128,not run\n")
    figures.plot_lines(str(sweep_dir / "loss_curves"), {"loss": {"w-32": [(1, 2.0), (2, 1.0)]}}, xlabel="step")
    plot = (sweep_dir / "loss_curves.png").read_bytes()
    for point, rdkit in (("w-32", None), ("w-64", "2023.9.1")):
        entry = provenance.record()
        entry["versions"]["rdkit"] = rdkit or entry["versions"]["rdkit"]
        (sweep_dir / point).mkdir()
        (sweep_dir / point / provenance.FILE).write_text(json.dumps([entry]))

    for output in (sweep_dir, tmp_path / "sweep" / ".." / "sweep"):  # the same folder, written two ways
        assert report.main([str(sweep_dir), f"--output_dir={output}"]) == 0
        assert (sweep_dir / "loss_curves.png").read_bytes() == plot
    page = (sweep_dir / "index.html").read_text()
    assert "<th>recorded with w-32</th><th>recorded with w-64</th><th>this report</th>" in page
    assert f"<td>rdkit</td><td>{provenance.versions()['rdkit']}</td><td>2023.9.1</td>" in page and "differs" in page
    assert "w-128 recorded no versions" in page
    assert report._same_path("gs://bucket/sweep/x.png", "gs://bucket/sweep/./plots/../x.png")
    assert not report._same_path("gs://bucket/sweep/x.png", "gs://bucket/report/x.png")

    capsys.readouterr()
    assert report.main([str(tmp_path / "none")]) == 2
    assert f"textchem-report: {tmp_path / 'none'} does not exist" in capsys.readouterr().err
