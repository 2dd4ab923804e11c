"""`textchem-tpu`: a training run as a Cloud TPU batch job (or a SLURM GPU job), resumed until it is done.

    textchem-tpu --name=tct5 --zone=us-west4-a --accelerator_type=v5litepod-64 --runtime_version=v2-alpha-tpuv5-lite \\
      --spot --repo=https://github.com/you/textchem_jax --model_dir=gs://bucket/run --train_steps=100000 \\
      [--dry_run] -- --gin_file=experiments/text_chem_t5_base_augm.gin --gin.INITIAL_CHECKPOINT_PATH="'gs://...'"
    textchem-tpu --slurm --nodes=2 --gpus_per_node=8 --model_dir=/shared/run --train_steps=100000 [--dry_run] -- ...

TPU: creates (or reuses) a TPU VM slice, directly or as a queued resource (spot or on-demand), installs the
project at exactly `--ref` on every worker with the README's set-up command (with `--engine=t5x` also a T5X
checkout at `--t5x_ref`), starts the same `textchem-train` (or `t5x.train`) on every worker (`--worker=all`; JAX finds its peers itself), streams worker 0's log, and
when the slice is preempted deletes it, creates it again and reruns the command, which resumes from the
latest checkpoint in the `gs://` MODEL_DIR, until that checkpoint reaches `--train_steps`. A failure on a
healthy slice stops the loop with its exit code. `--dry_run` prints every `gcloud` command instead.
SLURM: writes an sbatch script (one task per node, `srun`; `jax.distributed` reads SLURM's environment, in
t5x.train with `--multiprocess_gpu`; SIGTERM to the training tasks two minutes before the time limit, on which
textchem-train saves and exits while t5x.train loses the steps since its last periodic checkpoint, and the job
queued again until the run reaches its steps, but not after an attempt that saved no new step, which would repeat
forever; `--requeue` for preemption).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from textchem_jax.cli import at_least, command, quiet_libraries
from textchem_jax.paths import expand_user, is_remote, missing_bucket
from textchem_jax.run_results import latest_step

# T5X on the workers (`--engine=t5x`): cloned into this folder beside `textchem_jax`, at `--t5x_ref`.
T5X_REPO = "https://github.com/google-research/t5x"
T5X_FOLDER = "t5x"
# What T5X imports that setup.py does not install: from git as T5X's setup.py names them (without their
# dependencies, which pin old seqio and tfds builds), and from PyPI.
T5X_GIT_PACKAGES = ("airio @ git+https://github.com/google/airio", "jestimator @ git+https://github.com/google-research/jestimator")
T5X_PYPI_PACKAGES = ("chex", "fiddle>=0.2.5", "jaxtyping", "cached_property", "grain")
# sbatch --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.
SLURM_TIME = re.compile(r"\d+(-\d+)?(:\d+){0,2}")
PREEMPTED_STATES = {"PREEMPTED", "TERMINATED", "STOPPED", "SUSPENDED", "NOT_FOUND"}
# Worker 0 of a TPU VM slice, from the metadata server: its output is the log we stream.
_WORKER_ID = "curl -s -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number"


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    """The `gcloud compute tpus` commands for one slice (documented syntax of `tpu-vm` and `queued-resources`)."""

    name: str
    zone: str
    accelerator_type: str
    runtime_version: str
    spot: bool = False
    queued: bool = False
    project: str | None = None

    def _common(self) -> list[str]:
        return [f"--zone={self.zone}", *([f"--project={self.project}"] if self.project else [])]

    def create(self) -> list[str]:
        capacity = ["--spot"] if self.spot else []
        if self.queued:
            return ["gcloud", "compute", "tpus", "queued-resources", "create", self.name, f"--node-id={self.name}",
                    *self._common(), f"--accelerator-type={self.accelerator_type}",
                    f"--runtime-version={self.runtime_version}", *capacity]  # fmt: skip
        return ["gcloud", "compute", "tpus", "tpu-vm", "create", self.name, *self._common(),
                f"--accelerator-type={self.accelerator_type}", f"--version={self.runtime_version}", *capacity]  # fmt: skip

    def state(self) -> list[str]:
        return ["gcloud", "compute", "tpus", "tpu-vm", "describe", self.name, *self._common(), "--format=value(state)"]

    def ssh(self, command: str, worker: str = "all") -> list[str]:
        return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", self.name, *self._common(), f"--worker={worker}",
                f"--command={command}"]  # fmt: skip

    def delete(self) -> list[str]:
        if self.queued:
            return ["gcloud", "compute", "tpus", "queued-resources", "delete", self.name, *self._common(), "--force", "--quiet"]
        return ["gcloud", "compute", "tpus", "tpu-vm", "delete", self.name, *self._common(), "--quiet"]


def checkout_command(repo: str, folder: str, ref: str) -> str:
    """Clone `repo` into `folder`, or fetch into the clone a reused slice kept, then check out exactly `ref`
    (branch, tag or commit), detached: `git checkout main` on an old clone stays on its old commit."""
    quoted = shlex.quote(folder)
    update = f"git -C {quoted} remote set-url origin {shlex.quote(repo)} && git -C {quoted} fetch --quiet --force --tags origin"
    checkout = f"git -C {quoted} checkout --quiet --force --detach"
    return (f"if [ -d {quoted}/.git ]; then {update}; else git clone --quiet {shlex.quote(repo)} {quoted}; fi && "
            f"({checkout} {shlex.quote('origin/' + ref)} 2>/dev/null || {checkout} {shlex.quote(ref)})")  # fmt: skip


def setup_command(repo: str, ref: str, engine: str = "textchem", t5x_ref: str = "main") -> str:
    """Check out the project and run the README's set-up command with the `tpu` extra (libtpu: without it JAX
    finds no TPU and trains on the VM's CPU), on every worker. With T5X (not on PyPI) also its checkout beside
    the project, installed without its dependencies (they are git heads of flax, optax and seqio that would
    replace our pinned versions), plus the few packages it imports that we do not install."""
    line = f"{checkout_command(repo, 'textchem_jax', ref)} && "
    if engine == "t5x":
        line += f"{checkout_command(T5X_REPO, T5X_FOLDER, t5x_ref)} && "
    line += "cd textchem_jax && bash scripts/setup.sh tpu"
    if engine == "t5x":
        line += (f" && python -m pip install --quiet --no-deps -e ../{T5X_FOLDER} {shlex.join(T5X_GIT_PACKAGES)}"
                 f" && python -m pip install --quiet {shlex.join(T5X_PYPI_PACKAGES)}")  # fmt: skip
    return line


def training(engine: str, model_dir: str, train_steps: int, args: Sequence[str], engine_flags: Sequence[str] = ()) -> str:
    """The training command line: our engine or T5X's, its own flags, MODEL_DIR and TRAIN_STEPS set, then the
    user's flags."""
    program = "textchem-train" if engine == "textchem" else "python -m t5x.train"
    flags = [*engine_flags, f'--gin.MODEL_DIR="{model_dir}"', f"--gin.TRAIN_STEPS={train_steps}", *args]
    return f"{program} {shlex.join(flags)}"


def t5x_search_paths(args: Sequence[str], paths: Sequence[str] = ("gin_configs/t5x", f"../{T5X_FOLDER}")) -> list[str]:
    """Where t5x.train finds our `gin_configs/t5x` files and T5X's own `t5x/configs/...` they include: on a TPU
    worker, the checkouts (`paths`); in a SLURM job, which runs where it was submitted, this installation's
    folder (T5X adds its own). None when the user gave `--gin_search_paths` after `--`."""
    if any(arg == "--gin_search_paths" or arg.startswith("--gin_search_paths=") for arg in args):
        return []
    return [f"--gin_search_paths={','.join(paths)}"]


def train_command(engine: str, model_dir: str, train_steps: int, args: Sequence[str]) -> str:
    """The same training command for every worker; worker 0 streams its output, the others keep it in a file."""
    engine_flags = t5x_search_paths(args) if engine == "t5x" else []
    run = f"cd textchem_jax && {training(engine, model_dir, train_steps, args, engine_flags)}"
    return f'{run} 2>&1 | if [ "$({_WORKER_ID})" = 0 ]; then tee -a ~/textchem_train.log; else cat >> ~/textchem_train.log; fi; exit ${{PIPESTATUS[0]}}'


class GcloudJob:
    """Runs (or, dry, prints) the gcloud commands of one TPU job; what `run_until_done` drives."""

    def __init__(self, tpu: TpuSlice, setup: str, train: str, dry_run: bool = False, printer: Callable = print):
        self.tpu, self.setup_line, self.train_line, self.dry_run, self.print = tpu, setup, train, dry_run, printer

    def _run(self, command: list[str], capture: bool = False) -> subprocess.CompletedProcess:
        self.print("$ " + shlex.join(command))
        if self.dry_run:
            return subprocess.CompletedProcess(command, 0, stdout="READY\n" if capture else None)
        return subprocess.run(command, capture_output=capture, text=True, check=False)

    def state(self) -> str:
        result = self._run(self.tpu.state(), capture=True)
        state = (result.stdout or "").strip() if result.returncode == 0 else ""
        return state or "NOT_FOUND"

    def create(self) -> None:
        if self._run(self.tpu.create()).returncode != 0:
            raise RuntimeError(f"could not create TPU {self.tpu.name}: see gcloud's message above")

    def delete(self) -> None:
        self._run(self.tpu.delete())

    def wait_ready(self, wait_s: float = 30.0, timeout_s: float = 24 * 3600) -> None:
        """A queued resource is created at once and becomes READY when capacity comes; a TPU VM is READY."""
        deadline = time.time() + timeout_s
        while (state := self.state()) != "READY":
            if time.time() > deadline:
                raise RuntimeError(f"TPU {self.tpu.name} not READY after {timeout_s:.0f} s (state {state})")
            time.sleep(wait_s)

    def setup(self) -> None:
        if self._run(self.tpu.ssh(self.setup_line)).returncode != 0:
            raise RuntimeError(f"set-up failed on {self.tpu.name}: see the output above")

    def train(self) -> int:
        return self._run(self.tpu.ssh(self.train_line)).returncode


def run_step(model_dir: str) -> int:
    """MODEL_DIR's latest checkpoint step, read where textchem-train writes it: `~` and `..` expanded as it expands
    them (a SLURM job's check read `./~/x` for `--model_dir='~/x'`, found step 0 and queued a finished run again
    forever); TensorFlow, needed for gs:// only, imported without its C++ start-up lines (6 in the job log at each
    check)."""
    model_dir = expand_user(model_dir)
    if is_remote(model_dir):
        quiet_libraries()
    return latest_step(model_dir)


def requeue_wanted(model_dir: str, train_steps: int, step_before: str) -> bool:
    """Whether a SLURM job that stopped cleanly goes in the queue again: while the run is short of `train_steps`,
    and only if this attempt moved its latest step from `step_before` (as the job read it before `srun`): one
    that did not (a MODEL_DIR read wrong, a run that exits at once) would be requeued forever. Says why not."""
    step = run_step(model_dir)
    if step >= train_steps:
        return False
    if step_before.strip() == str(step):
        print(f"textchem job: {expand_user(model_dir)} is still at step {step} of {train_steps} after this attempt: "
              "not queued again (it would repeat forever); see the training log above, fix, and sbatch this script "
              "again", file=sys.stderr, flush=True)  # fmt: skip
        return False
    return True


def run_until_done(job, *, model_dir: str, train_steps: int, max_restarts: int = 100, printer: Callable = print,
                   wait_s: float = 30.0) -> int:  # fmt: skip
    """Create or reuse the slice, set it up, train; after a preemption recreate it and train again (the run
    resumes from MODEL_DIR's latest checkpoint) until that checkpoint is at `train_steps`. Returns the restarts."""
    restarts, ready = 0, False
    while True:
        state = job.state()
        if state in PREEMPTED_STATES:
            if state != "NOT_FOUND":
                job.delete()
            job.create()
            ready = False
        if state != "READY":
            job.wait_ready()
        if not ready:
            job.setup()
            ready = True
        code = job.train()
        step = run_step(model_dir)
        if step >= train_steps:
            printer(f"done: {model_dir} is at step {step} of {train_steps} after {restarts} restart(s)")
            return restarts
        state = job.state()
        if state not in PREEMPTED_STATES and code == 0:
            raise RuntimeError(missing_bucket(model_dir) or (  # the tool sets TRAIN_STEPS: "is it set?" misled
                f"training exited 0 but {model_dir} is at step {step} of {train_steps}: the run saved no checkpoint "
                "there that this machine can read; see worker 0's log above"))  # fmt: skip
        if state not in PREEMPTED_STATES and code not in (143, 137, -15, -9, 255):
            raise RuntimeError(f"training failed with exit code {code} on a healthy slice (state {state}) at step {step}")
        restarts += 1
        if restarts > max_restarts:
            raise RuntimeError(f"gave up after {max_restarts} restarts at step {step} of {train_steps}")
        printer(f"preempted (state {state}, exit {code}) at step {step} of {train_steps}: restart {restarts}")
        time.sleep(wait_s)


def slurm_time(text: str) -> str:
    """An argparse `type`: a SLURM `--time` (sbatch would refuse anything else only once the job is queued)."""
    if not SLURM_TIME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a SLURM time: give minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS")
    return text


def slurm_script(*, nodes: int, gpus_per_node: int, model_dir: str, train_steps: int, args: Sequence[str],
                 time_limit: str = "24:00:00", partition: str | None = None, engine: str = "textchem") -> str:  # fmt: skip
    """An sbatch script: one task per GPU (JAX's SLURM set-up gives each process the GPU of its SLURM_LOCALID: one
    task per node trained on 1 GPU of 8), that runs until MODEL_DIR's checkpoint reaches `train_steps`. SIGTERM
    goes to the training tasks themselves two minutes before the time limit (`--signal` without `B:`, which would
    reach only this script's shell); textchem-train saves and exits 0, t5x.train dies of it (143) and loses the
    steps since its last periodic checkpoint (JAX's preemption service, which took the signal over and let it
    train on to the limit, is turned off). Either way the script then queues the job again while the run is
    unfinished (SLURM's `--requeue` covers preemption and node failure only)."""
    from textchem_jax.launch import GIN_CONFIGS

    step_now = "python -c 'import sys; from textchem_jax.tpu import run_step; print(run_step(sys.argv[1]))' "
    requeue_wanted = ("python -c 'import sys; from textchem_jax.tpu import requeue_wanted; "
                      "sys.exit(not requeue_wanted(sys.argv[1], int(sys.argv[2]), sys.argv[3]))' ")  # fmt: skip
    if engine == "t5x":  # t5x.train joins its peers (jax.distributed, from SLURM's environment) only with this flag
        start = ["# t5x.train --multiprocess_gpu: jax.distributed.initialize() reads SLURM's environment."]
        engine_flags = ["--multiprocess_gpu", *t5x_search_paths(args, [str(GIN_CONFIGS / "t5x")])]
    else:
        start = ["# jax.distributed.initialize() reads SLURM's environment (textchem-train calls it in an srun step)."]
        engine_flags = []
    lines = ["#!/bin/bash", "#SBATCH --job-name=textchem", f"#SBATCH --nodes={nodes}",
             f"#SBATCH --ntasks-per-node={gpus_per_node}", f"#SBATCH --gpus-per-node={gpus_per_node}",
             f"#SBATCH --time={time_limit}", "#SBATCH --requeue", "#SBATCH --signal=TERM@120",
             *([f"#SBATCH --partition={partition}"] if partition else []), *start,
             "# One task per GPU: each process drives the GPU of its SLURM_LOCALID, as jax.distributed sets it up.",
             "# JAX's preemption service would take the time limit's SIGTERM over and train on until SLURM kills the job.",
             "export JAX_ENABLE_PREEMPTION_SERVICE=false",
             "# The run's latest checkpoint step before this attempt (MODEL_DIR read as textchem-train reads it).",
             f"step_before=$({step_now}{shlex.quote(model_dir)})",
             f"srun {training(engine, model_dir, train_steps, args, engine_flags)}", "status=$?",
             "# Stopped by the time-limit SIGTERM (textchem-train saves and exits 0; t5x.train does not save and dies",
             "# with 143, losing the steps since its last periodic checkpoint) with steps to go: queue this job again;",
             "# it resumes from the latest checkpoint. Not when this attempt did not move the latest step (it would",
             "# repeat forever: said in this log). Any other exit status is a failure and ends the job.",
             f'if {{ [ "$status" = 0 ] || [ "$status" = 143 ]; }} && {requeue_wanted}'
             f'{shlex.join([model_dir, str(train_steps)])} "$step_before"; then scontrol requeue "$SLURM_JOB_ID"; fi',
             'exit "$status"']  # fmt: skip
    return "\n".join(lines) + "\n"


@command
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="textchem-tpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="MODEL_DIR: gs://... for TPU jobs, shared storage for SLURM")
    parser.add_argument("--train_steps", type=at_least(1), required=True, help="TRAIN_STEPS (absolute): the job ends there")
    parser.add_argument("--engine", choices=("textchem", "t5x"), default="textchem")
    parser.add_argument("--dry_run", action="store_true", help="print the commands instead of running them")
    parser.add_argument("--name", default="textchem")
    parser.add_argument("--zone")
    parser.add_argument("--project")
    parser.add_argument("--accelerator_type", help="e.g. v4-32, v5litepod-64")
    parser.add_argument("--runtime_version", help="e.g. tpu-ubuntu2204-base, v2-alpha-tpuv5-lite")
    parser.add_argument("--spot", action="store_true", help="spot capacity (preemptible); default on-demand")
    parser.add_argument("--queued_resource", action="store_true", help="request the slice as a queued resource")
    parser.add_argument("--repo", help="git URL of this project, cloned on every worker")
    parser.add_argument("--ref", default="main", help="git branch, tag or commit of --repo that every worker runs")
    parser.add_argument("--t5x_ref", default="main", help=f"--engine=t5x: git branch, tag or commit of {T5X_REPO}")
    parser.add_argument("--max_restarts", type=at_least(0), default=100)
    parser.add_argument("--slurm", action="store_true", help="a SLURM GPU job instead of a TPU slice")
    parser.add_argument("--nodes", type=at_least(1), default=1)
    parser.add_argument("--gpus_per_node", type=at_least(1), default=8)
    parser.add_argument("--partition")
    parser.add_argument("--time_limit", type=slurm_time, default="24:00:00", help="sbatch --time, e.g. 24:00:00 or 2-00")
    args = parser.parse_args(argv)
    overridden = [arg for arg in train_args if arg.startswith(("--gin.MODEL_DIR=", "--gin.TRAIN_STEPS="))]
    if overridden:  # the job's command sets both, and its resume loop watches --model_dir up to --train_steps
        parser.error(f"{' '.join(overridden)} after --: give them as --model_dir and --train_steps")

    if args.slurm:
        script = slurm_script(nodes=args.nodes, gpus_per_node=args.gpus_per_node, model_dir=args.model_dir,
                              train_steps=args.train_steps, args=train_args, time_limit=args.time_limit,
                              partition=args.partition, engine=args.engine)  # fmt: skip
        if args.dry_run:
            print(script + "$ sbatch textchem_job.sbatch")
            return 0
        with open("textchem_job.sbatch", "w") as f:  # local only: the script sbatch reads from this folder
            f.write(script)
        if shutil.which("sbatch") is None:
            print("textchem-tpu: sbatch not found: run on a SLURM login node, or use --dry_run to get the script "
                  "(also written to textchem_job.sbatch)", file=sys.stderr)  # fmt: skip
            return 1
        return subprocess.run(["sbatch", "textchem_job.sbatch"], check=False).returncode
    missing = [flag for flag in ("zone", "accelerator_type", "runtime_version", "repo") if getattr(args, flag) is None]
    if missing:
        parser.error("a TPU job needs " + ", ".join(f"--{flag}" for flag in missing))
    if not is_remote(args.model_dir):  # each worker would write its own disk, deleted with the slice on preemption
        parser.error(f"--model_dir={args.model_dir}: a TPU job's MODEL_DIR is shared storage every worker reaches and "
                     "that outlives the slice: a gs:// bucket")  # fmt: skip
    tpu = TpuSlice(args.name, args.zone, args.accelerator_type, args.runtime_version, args.spot, args.queued_resource,
                   args.project)  # fmt: skip
    job = GcloudJob(tpu, setup_command(args.repo, args.ref, args.engine, args.t5x_ref),
                    train_command(args.engine, args.model_dir, args.train_steps, train_args), dry_run=args.dry_run)  # fmt: skip
    if args.dry_run:  # one full cycle: create, set up, train, and what a preemption adds
        job.create()
        job.setup()
        job.train()
        print("# on preemption (state PREEMPTED), then the same set-up and training command again:")
        job.state()
        job.delete()
        job.create()
        return 0
    try:
        run_until_done(job, model_dir=args.model_dir, train_steps=args.train_steps, max_restarts=args.max_restarts)
    except RuntimeError as error:
        print(f"textchem-tpu: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
