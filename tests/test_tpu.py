"""`textchem-tpu`: its gcloud and SLURM commands, and its resume loop against a simulated preemptible slice
(a local training process killed at random steps by SIGTERM, then SIGKILL) that must end bitwise where an
uninterrupted run ends (the test of resuming after SIGKILL: the kill lands between checkpoints, so the
resumed run repeats steps and must still end on the same bits)."""

from __future__ import annotations

import os
import random
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, checkpoint_params

from textchem_jax import tpu

TRAIN = [sys.executable, "-m", "textchem_jax.train", "--gin_file=experiments/quickstart.gin",
         "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 48}", "--gin.BATCH_SIZE=4",
         "--gin.train_lib.train.log_period=1", "--gin.train_lib.train.eval_period=None", "--gin.train_lib.train.eval_steps=0",
         "--gin.infer_eval/run_config.DatasetConfig.num_examples=0", "--gin.run_config.CheckpointConfig.period=3"]  # fmt: skip


def test_dry_run_prints_the_documented_gcloud_commands(capsys):
    assert tpu.main(["--name=tct5", "--zone=us-west4-a", "--accelerator_type=v5litepod-64", "--spot", "--queued_resource",
                     "--runtime_version=v2-alpha-tpuv5-lite", "--repo=https://example.org/textchem_jax.git",
                     "--model_dir=gs://bucket/run", "--train_steps=1000", "--dry_run", "--",
                     "--gin_file=experiments/text_chem_t5_base_augm.gin"]) == 0  # fmt: skip
    commands = [shlex.split(line[2:]) for line in capsys.readouterr().out.splitlines() if line.startswith("$ ")]
    create = ["gcloud", "compute", "tpus", "queued-resources", "create", "tct5", "--node-id=tct5", "--zone=us-west4-a",
              "--accelerator-type=v5litepod-64", "--runtime-version=v2-alpha-tpuv5-lite", "--spot"]  # fmt: skip
    assert commands[0] == create and commands[-1] == create  # created, and again after a preemption
    setup, train = commands[1], commands[2]
    assert setup[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "tct5", "--zone=us-west4-a", "--worker=all"]
    assert setup[8].endswith("bash scripts/setup.sh tpu")  # the README's set-up command, with libtpu (else the CPU)
    assert train[7] == "--worker=all" and 'textchem-train \'--gin.MODEL_DIR="gs://bucket/run"\' --gin.TRAIN_STEPS=1000' in train[8]
    assert "experiments/text_chem_t5_base_augm.gin" in train[8] and "agent-worker-number" in train[8]  # worker 0 streams
    assert commands[3][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "tct5"] and "--format=value(state)" in commands[3]
    assert commands[4] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "tct5", "--zone=us-west4-a", "--force", "--quiet"]

    on_demand = tpu.TpuSlice("n", "us-central2-b", "v4-32", "tpu-ubuntu2204-base")
    assert on_demand.create() == ["gcloud", "compute", "tpus", "tpu-vm", "create", "n", "--zone=us-central2-b",
                                  "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"]  # fmt: skip
    assert on_demand.delete() == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "n", "--zone=us-central2-b", "--quiet"]


def test_slurm_dry_run_prints_a_requeued_srun_job(capsys):
    assert tpu.main(["--slurm", "--nodes=2", "--gpus_per_node=8", "--model_dir=/shared/run", "--train_steps=500",
                     "--dry_run", "--", "--gin_file=experiments/quickstart.gin"]) == 0  # fmt: skip
    script = capsys.readouterr().out
    # One task per GPU: jax.distributed gives each SLURM task the GPU of its SLURM_LOCALID, and one task per node
    # trained on 1 GPU of 8 (probe: "JAX distributed initialized with visible devices: 0").
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8", "#SBATCH --requeue",
                 "#SBATCH --signal=TERM@120", "export JAX_ENABLE_PREEMPTION_SERVICE=false", "$ sbatch textchem_job.sbatch"):  # fmt: skip
        assert line in script
    # `B:TERM` signalled only the batch shell: the training tasks never saved before the time limit.
    assert "B:TERM" not in script
    assert "srun textchem-train '--gin.MODEL_DIR=\"/shared/run\"' --gin.TRAIN_STEPS=500 --gin_file=experiments/quickstart.gin" in script


def run_script_tail(tmp_path, script: str, srun_status: int, saves=None, **env: str) -> subprocess.CompletedProcess:
    """The script run by bash in `tmp_path` with `srun` (making the folder `saves`, as a training attempt saves
    a step, and exiting `srun_status`) and `scontrol` (writing its arguments to scontrol.txt) on PATH as small
    scripts: SLURM itself is not here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = (f"mkdir -p {shlex.quote(str(saves))}; " if saves else "") + f"exit {srun_status}"
    for name, body in (("srun", srun), ("scontrol", f'echo "$@" > {tmp_path / "scontrol.txt"}')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return subprocess.run(["bash", "-c", script], env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                                                       "SLURM_JOB_ID": "77", **env},
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip


# textchem-train saves on the time-limit SIGTERM and exits 0; t5x.train does not save and dies of it (143): both
# are queued again while the run is short of its steps; another failure is not.
@pytest.mark.parametrize("engine, srun_status, step, requeued", [
    ("textchem", 0, 100, True), ("textchem", 0, 300, True), ("textchem", 0, 500, False), ("textchem", 1, 300, False),
    ("t5x", 143, 300, True), ("t5x", 143, 500, False), ("t5x", 1, 300, False)])  # fmt: skip
def test_slurm_script_queues_itself_again_until_the_run_reaches_its_steps(tmp_path, engine, srun_status, step, requeued):
    run = tmp_path / "my run"
    (run / "checkpoints" / "50").mkdir(parents=True)
    script = tpu.slurm_script(nodes=1, gpus_per_node=1, model_dir=str(run), train_steps=500, args=[], engine=engine)
    result = run_script_tail(tmp_path, script, srun_status, saves=run / "checkpoints" / str(step))
    assert result.returncode == srun_status, result.stderr
    assert (tmp_path / "scontrol.txt").exists() == requeued, result.stderr
    if requeued:
        assert (tmp_path / "scontrol.txt").read_text().split() == ["requeue", "77"]


_TENSORFLOW_START_UP = ("absl::InitializeLog", "cudart_stub", "cpu_feature_guard")  # its C++ lines, printed at import


@pytest.mark.parametrize("saved, requeued", [(30, False), (20, True)])
def test_slurm_job_reads_a_tilde_model_dir_where_textchem_train_writes_it(tmp_path, saved, requeued):
    """`--model_dir='~/x'` (the README allows it: textchem-train expands it) was checked as `./~/x`, at step 0, and a
    finished run was queued again forever (4 of 4 times); each check also printed TensorFlow's start-up lines."""
    home = tmp_path / "home"
    (home / "x" / "checkpoints" / "10").mkdir(parents=True)
    script = tpu.slurm_script(nodes=1, gpus_per_node=1, model_dir="~/x", train_steps=30, args=[])
    result = run_script_tail(tmp_path, script, 0, saves=home / "x" / "checkpoints" / str(saved), HOME=str(home))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "scontrol.txt").exists() == requeued, result.stderr
    assert not (tmp_path / "~").exists()
    assert not [line for line in result.stderr.splitlines() if any(text in line for text in _TENSORFLOW_START_UP)]


def test_a_slurm_attempt_that_does_not_move_the_step_is_not_queued_again_and_says_why(tmp_path):
    """A run short of its steps whose attempt saved nothing (a MODEL_DIR read wrong, a command that exits at once)
    was queued again forever."""
    run = tmp_path / "run"
    (run / "checkpoints" / "10").mkdir(parents=True)
    script = tpu.slurm_script(nodes=1, gpus_per_node=1, model_dir=str(run), train_steps=30, args=[])
    result = run_script_tail(tmp_path, script, 0)
    assert result.returncode == 0 and not (tmp_path / "scontrol.txt").exists()
    assert (f"textchem job: {run} is still at step 10 of 30 after this attempt: not queued again (it would repeat "
            "forever); see the training log above, fix, and sbatch this script again") in result.stderr


def test_slurm_t5x_job_initializes_jax_distributed_on_every_node(capsys):
    """Without --multiprocess_gpu t5x.train never calls jax.distributed.initialize: each node trained alone."""
    assert tpu.main(["--slurm", "--engine=t5x", "--nodes=2", "--gpus_per_node=8", "--model_dir=/shared/my run",
                     "--train_steps=100", "--dry_run", "--", "--gin_search_paths=gin_configs/t5x,/opt/t5x",
                     "--gin_file=quickstart.gin"]) == 0  # fmt: skip
    script = capsys.readouterr().out
    assert ("srun python -m t5x.train --multiprocess_gpu '--gin.MODEL_DIR=\"/shared/my run\"' --gin.TRAIN_STEPS=100 "
            "--gin_search_paths=gin_configs/t5x,/opt/t5x --gin_file=quickstart.gin") in script  # fmt: skip
    assert "last periodic checkpoint" in script  # what T5X loses at the time limit, said in the script
    from textchem_jax.launch import GIN_CONFIGS  # the job runs where it was submitted: our gin files by their path

    found = tpu.slurm_script(nodes=1, gpus_per_node=1, model_dir="/r", train_steps=1, args=[], engine="t5x")
    assert f"--multiprocess_gpu {shlex.quote('--gin_search_paths=' + str(GIN_CONFIGS / 't5x'))} " in found
    ours = tpu.slurm_script(nodes=2, gpus_per_node=8, model_dir="/r", train_steps=1, args=[])
    assert "--multiprocess_gpu" not in ours  # textchem-train initializes itself under SLURM


def test_the_slurm_scripts_environment_lets_the_time_limits_sigterm_end_a_jax_distributed_process(tmp_path):
    """JAX's preemption service takes SIGTERM over at jax.distributed.initialize and only records it: t5x.train
    trained on past the signal ("preemption_notifier.cc:90] SIGTERM caught") until SLURM killed the whole job, so
    the requeue never ran. The script turns the service off; here a process under SLURM's variables (one task on
    this host) initializes as t5x.train does and is sent SIGTERM."""
    script = tpu.slurm_script(nodes=1, gpus_per_node=1, model_dir="/r", train_steps=1, args=[], engine="t5x")
    exported = dict(line.removeprefix("export ").split("=", 1) for line in script.splitlines() if line.startswith("export "))
    code = ("import os, signal, time, jax; jax.distributed.initialize(); os.kill(os.getpid(), signal.SIGTERM); "
            "time.sleep(20); print('trained on')")  # fmt: skip
    slurm = {"SLURM_JOB_ID": str(4000 + os.getpid() % 1000), "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "1",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, **slurm, **exported, "JAX_PLATFORMS": "cpu"},
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == -signal.SIGTERM and "trained on" not in result.stdout, result.stderr[-2000:]


def test_a_command_in_a_slurm_allocation_without_srun_runs_as_one_process(tmp_path):
    """In an `salloc` shell (or a batch script without srun) SLURM_JOB_ID is set but no job step: every command
    ended in JAX's 26-line traceback, "ValueError: coordinator_address should be defined"."""
    code = ("from textchem_jax import launch; import jax; "
            "print(launch.initialize_distributed(None, None, None), jax.process_count())")  # fmt: skip
    for step, said in (({}, "False 1"), ({"SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
                                          "SLURM_LOCALID": "0"}, "True 1")):  # fmt: skip
        env = {**os.environ, "SLURM_JOB_ID": str(5000 + os.getpid() % 1000), "SLURM_JOB_NODELIST": "localhost", **step,
               "JAX_PLATFORMS": "cpu"}  # fmt: skip
        result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stdout.split("\n")[-2] == said, result.stderr[-2000:]


@pytest.mark.parametrize("time_limit", ["90", "30:00", "24:00:00", "2-12", "2-12:30", "2-12:30:00"])
def test_slurm_accepts_every_slurm_time_format(capsys, time_limit):
    assert tpu.main(["--slurm", "--model_dir=/r", "--train_steps=3", f"--time_limit={time_limit}", "--dry_run"]) == 0
    assert f"#SBATCH --time={time_limit}\n" in capsys.readouterr().out


@pytest.mark.parametrize("time_limit", ["forever", "1:2:3:4", "2-", "-5", "1h", ""])
def test_slurm_refuses_a_time_limit_sbatch_would_refuse(capsys, time_limit):
    with pytest.raises(SystemExit):
        tpu.main(["--slurm", "--model_dir=/r", "--train_steps=3", f"--time_limit={time_limit}", "--dry_run"])
    assert "is not a SLURM time: give minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS" in capsys.readouterr().err


def test_slurm_without_sbatch_says_where_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert tpu.main(["--slurm", "--model_dir=/r", "--train_steps=3"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("textchem-tpu: sbatch not found: run on a SLURM login node, or use --dry_run") and "Errno" not in error
    assert (tmp_path / "textchem_job.sbatch").read_text().startswith("#!/bin/bash")


def test_t5x_tpu_job_installs_t5x_and_puts_its_gin_files_on_the_search_path(capsys):
    """T5X is not on PyPI: each worker gets a checkout at --t5x_ref beside the project, installed editable, and
    t5x.train finds gin_configs/t5x's files and T5X's own configs they include."""
    flags = ["--engine=t5x", "--name=tct5", "--zone=us-west4-a", "--accelerator_type=v4-32", "--t5x_ref=v0.7.1",
             "--runtime_version=tpu-ubuntu2204-base", "--repo=https://github.com/you/textchem_jax",
             "--model_dir=gs://bucket/run", "--train_steps=1000", "--dry_run", "--"]  # fmt: skip
    assert tpu.main([*flags, "--gin_file=text_chem_t5_small_standard.gin"]) == 0
    commands = [shlex.split(line[2:]) for line in capsys.readouterr().out.splitlines() if line.startswith("$ ")]
    setup, train = commands[1][8], commands[2][8]
    assert tpu.checkout_command("https://github.com/google-research/t5x", "t5x", "v0.7.1") in setup
    assert setup.index("bash scripts/setup.sh tpu") < setup.index("python -m pip install --quiet --no-deps -e ../t5x")
    assert ("cd textchem_jax && python -m t5x.train --gin_search_paths=gin_configs/t5x,../t5x "
            "'--gin.MODEL_DIR=\"gs://bucket/run\"' --gin.TRAIN_STEPS=1000 --gin_file=text_chem_t5_small_standard.gin") in train  # fmt: skip
    assert (ROOT / "gin_configs" / "t5x" / "text_chem_t5_small_standard.gin").is_file()  # relative to the clone
    # The user's own search paths are kept, not doubled.
    assert tpu.main([*flags, "--gin_search_paths=gin_configs/t5x,/opt/t5x", "--gin_file=quickstart.gin"]) == 0
    train = [line for line in capsys.readouterr().out.splitlines() if "t5x.train" in line][0]
    assert train.count("--gin_search_paths") == 1 and "gin_configs/t5x,/opt/t5x" in train
    # Our own engine gets neither T5X nor its flags.
    assert "t5x" not in tpu.setup_command("https://example.org/r.git", "main")


def test_a_reused_worker_runs_exactly_the_requested_ref(tmp_path):
    """The set-up's checkout, run twice in one worker folder as on a reused slice: after a new commit on the
    origin the clone moves to it (a plain `git checkout main` stayed behind origin/main), even with local edits;
    a tag and a commit check out as given."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"]
    origin, worker = tmp_path / "origin", tmp_path / "worker"
    worker.mkdir()

    def commit(text: str) -> str:
        (origin / "version.txt").write_text(text)
        subprocess.run([*git, "-C", str(origin), "commit", "-qam", text], check=True)
        return subprocess.run(["git", "-C", str(origin), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()

    def worker_at(ref: str) -> str:
        subprocess.run(["bash", "-c", tpu.checkout_command(str(origin), "textchem_jax", ref)], cwd=worker, check=True, timeout=60)
        return (worker / "textchem_jax" / "version.txt").read_text()

    subprocess.run([*git, "init", "-q", str(origin)], check=True)
    (origin / "version.txt").write_text("")
    subprocess.run([*git, "-C", str(origin), "add", "version.txt"], check=True)
    first = commit("first")
    subprocess.run([*git, "-C", str(origin), "tag", "v1"], check=True)
    assert worker_at("main") == "first"
    second = commit("second")
    (worker / "textchem_jax" / "version.txt").write_text("edited on the worker")
    assert worker_at("main") == "second"
    assert worker_at("v1") == "first"
    assert worker_at(first) == "first" and worker_at(second[:10]) == "second"
    head = subprocess.run(["git", "-C", str(worker / "textchem_jax"), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert head.stdout.strip() == second


def test_a_tpu_job_refuses_a_local_model_dir_and_flags_its_loop_sets(capsys):
    common = ["--zone=z", "--accelerator_type=v4-8", "--runtime_version=r", "--repo=u", "--dry_run"]
    with pytest.raises(SystemExit):
        tpu.main([*common, "--model_dir=run", "--train_steps=3"])
    assert "a gs:// bucket" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tpu.main([*common, "--model_dir=gs://b/r", "--train_steps=3", "--", "--gin.TRAIN_STEPS=5"])
    assert "give them as --model_dir and --train_steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tpu.main(["--slurm", "--model_dir=/shared/run", "--train_steps=3", "--nodes=0"])
    assert "--nodes: 0 is less than 1" in capsys.readouterr().err


def test_missing_tpu_flags_are_named(capsys):
    with pytest.raises(SystemExit):
        tpu.main(["--model_dir=gs://b/r", "--train_steps=3"])
    assert "--zone" in capsys.readouterr().err


class SimulatedSlice:
    """A preemptible slice on this machine: `train` runs the training command as a local process, which the
    preemption plan kills (SIGTERM, then SIGKILL) once the run has logged a given step."""

    def __init__(self, model_dir, train_steps: int, plan: list[tuple[int, int]], log: list[str]):
        self.model_dir, self.train_steps, self.plan, self.log = model_dir, train_steps, list(plan), log
        self.status, self.created, self.setups = "NOT_FOUND", 0, 0

    def state(self) -> str:
        return self.status

    def create(self) -> None:
        self.created += 1
        self.status = "READY"
        self.log.append(f"slice created ({self.created})")

    def delete(self) -> None:
        self.status = "NOT_FOUND"
        self.log.append("slice deleted")

    def wait_ready(self) -> None:
        assert self.status == "READY"

    def setup(self) -> None:
        self.setups += 1

    def train(self) -> int:
        command = [*TRAIN, f"--gin.MODEL_DIR='{self.model_dir}'", f"--gin.TRAIN_STEPS={self.train_steps}"]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        kill = self.plan.pop(0) if self.plan else None
        for line in process.stdout:
            if line.startswith(("resumed from", "step ")):
                self.log.append(line.split(" loss")[0].strip())
            if kill and line.startswith(f"step {kill[1]}/"):
                self.log.append(f"{signal.Signals(kill[0]).name} at step {kill[1]}")
                process.send_signal(kill[0])
                self.status = "PREEMPTED"
                kill = None
        return process.wait(timeout=600)


@pytest.mark.slow
def test_resume_loop_survives_random_preemptions_bitwise(tmp_path, capsys):
    steps = 12
    straight = tmp_path / "straight"
    result = subprocess.run([*TRAIN, f"--gin.MODEL_DIR='{straight}'", f"--gin.TRAIN_STEPS={steps}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    rng = random.Random(7)
    first = rng.randint(2, 6)
    plan = [(signal.SIGTERM, first), (signal.SIGKILL, rng.randint(first + 2, steps - 1))]
    log: list[str] = []
    job = SimulatedSlice(tmp_path / "preempted", steps, plan, log)
    restarts = tpu.run_until_done(job, model_dir=str(tmp_path / "preempted"), train_steps=steps, printer=log.append, wait_s=0)
    with capsys.disabled():
        print("\n" + "\n".join(log))
    assert restarts == 2 and job.created == 3 and job.setups == 3
    assert sum("resumed from" in line for line in log) == 2
    expected, actual = checkpoint_params(straight, steps), checkpoint_params(tmp_path / "preempted", steps)
    assert expected.keys() == actual.keys()
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)  # bitwise


def test_a_failure_on_a_healthy_slice_stops_the_loop(tmp_path):
    class Broken(SimulatedSlice):
        def train(self) -> int:
            return 1

    job = Broken(tmp_path, 10, [], [])
    with pytest.raises(RuntimeError, match="exit code 1 on a healthy slice"):
        tpu.run_until_done(job, model_dir=str(tmp_path), train_steps=10, wait_s=0)

    class SavedNothing(SimulatedSlice):  # a MODEL_DIR the workers wrote elsewhere, or a bucket this machine cannot read
        def train(self) -> int:
            return 0

    with pytest.raises(RuntimeError, match=rf"^training exited 0 but {tmp_path} is at step 0 of 10: the run saved no "
                                           r"checkpoint there that this machine can read; see worker 0's log above$"):  # fmt: skip
        tpu.run_until_done(SavedNothing(tmp_path, 10, [], []), model_dir=str(tmp_path), train_steps=10, wait_s=0)
