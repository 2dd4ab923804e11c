#!/usr/bin/env bash
# GPU check: T5-small and T5-base (v1.0) bf16 train steps with MFU, and beam-decode throughput, ours against
# Hugging Face (and real T5X where `import t5x` works). Under 10 minutes on one GPU.
#
# Why: the CPU benchmarks cannot say whether the trainer reaches the issue's MFU goal (45% at T5-base bf16 on an
# H200) on an accelerator. MFU, for every peer alike: analytic model FLOPs per step (models.flops) x steps/s /
# peak (trainer.peak_flops: the data sheet's bf16 peak on A100/H100/H200 and TPUs, a measured matmul elsewhere).
#
# 1. Model level (needs JAX, flax, optax, torch and transformers only: runs on a bare GPU image):
#    benchmarks/train_bench.py at each size, batch 64 x 512/512 random tokens, bfloat16 activations, float32
#    parameters and AdamW, HF on CUDA under torch.autocast; each peer's peak device memory from its own allocator;
#    then benchmarks/decode_bench.py (T5-small, 10 beams, 128 new tokens, EOS suppressed), HF on CUDA in bfloat16.
# 2. Whole pipeline (when seqio and TensorFlow import): each engine trains through its own entry point
#    (`python -m textchem_jax.train` with gin_configs/, `python -m t5x.train` with gin_configs/t5x) on
#    textchem_demo (generated: no data needed), packed, dropout off, no inference evaluation; steps/s is read
#    from each run's TensorBoard `timing/steps_per_second` after compilation (the last logging period), MFU from
#    the mean model FLOPs of our pipeline's batches of that mixture and shape; ours also logs its own
#    `timing/mfu` per step, shown beside it. T5X's beam decode (EncoderDecoderModel.predict_batch_with_aux) on
#    decode_bench's shapes.
#
# Set up on a GPU host (setup.py's `gpu` extra: jax[cuda12]==0.10.2):
#   pip install -e '.[gpu]'          # or: pip install 'jax[cuda12]==0.10.2'
#   bash benchmarks/gpu_check.sh     # T5X too with a T5X checkout on PYTHONPATH
#   bash benchmarks/gpu_check.sh --smoke   # or GPU_CHECK_SMOKE=1: tiny shapes, 2 steps, any CPU (proves the script)
set -euo pipefail
cd "$(dirname "$0")/.."
# JAX and torch share the GPU in one process (train_bench): JAX must not take 75% of it at start.
export TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

SMOKE="${GPU_CHECK_SMOKE:-0}"
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
if [[ "$SMOKE" == 1 ]]; then
  SIZES="tiny small" BATCH=2 LENGTH=32 STEPS=2 LOG_PERIOD=1 BENCH_STEPS=1
  DECODE=(--batch=2 --input_length=16 --new_tokens=4 --beams=2 --repeats=1)
else
  SIZES="small base" BATCH=64 LENGTH=512 STEPS=30 LOG_PERIOD=15 BENCH_STEPS=10
  DECODE=(--batch=32 --input_length=256 --new_tokens=128 --beams=10 --repeats=2)
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ROWS="$WORK/rows.jsonl"
LOGS="${GPU_CHECK_LOGS:-$WORK/logs}"  # each run's console output (kept if GPU_CHECK_LOGS names a folder)
mkdir -p "$LOGS"
if timeout 120 python -c "import t5x" 2>/dev/null; then HAS_T5X=1; else HAS_T5X=0; fi
if timeout 120 python -c "import seqio, tensorflow" 2>/dev/null; then HAS_PIPELINE=1; else HAS_PIPELINE=0; fi

# Appends one table row for a finished training run: steps/s from its TensorBoard events, MFU as above.
record_train() {  # engine size run_dir
  python - "$@" "$BATCH" "$LENGTH" "$ROWS" <<'PY' 2>>"$LOGS/record.log"
import glob, json, sys

import numpy as np
import tensorflow as tf

engine, size, run_dir, rows = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[6]
batch, length = int(sys.argv[4]), int(sys.argv[5])


def last_scalars(folder: str) -> dict[str, float]:
    """The last value of every scalar in a run's TensorBoard events (ours: clu; T5X: its own writer)."""
    values = {}
    for path in sorted(glob.glob(f"{folder}/events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalar = value.simple_value if value.HasField("simple_value") else tf.make_ndarray(value.tensor)
                values[value.tag] = float(np.asarray(scalar).reshape(-1)[0])
    return values


def step_flops(size: str) -> float:
    """Mean analytic FLOPs of a train step on our pipeline's packed textchem_demo batches of this shape."""
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.models.adapters import EncoderDecoderModel
    from textchem_jax.models.config import t5_config
    from textchem_jax.run_config import DatasetConfig, get_dataset

    vocab = vocabularies.task_vocabulary()
    config = t5_config(size, "1.0", vocab_size=vocabularies.padded_vocab_size(vocab))
    model = EncoderDecoderModel(config, vocabulary=vocab)
    cfg = DatasetConfig("textchem_demo", {"inputs": length, "targets": length}, "train", batch, seed=0)
    batches = get_dataset(cfg, model).take(8).as_numpy_iterator()
    return float(np.mean([model.train_flops(b) for b in batches]))


from textchem_jax.trainer import peak_flops  # noqa: E402

scalars = last_scalars(f"{run_dir}/train")
steps_per_second = scalars.get("timing/steps_per_second")
peak, source = peak_flops("bfloat16")
row = {"engine": engine, "what": f"T5-{size} train step", "shape": f"{batch} x {length}/{length} packed",
       "peak": source}
if steps_per_second:
    mfu = step_flops(size) * steps_per_second / peak
    logged = scalars.get("timing/mfu")
    row.update(ms=1000 / steps_per_second, rate=f"{batch * steps_per_second:.1f} rows/s", mfu=f"{mfu:.1%}",
               note=f"logged MFU {logged:.1%}" if logged is not None else "")
else:
    row.update(note=f"no timing/steps_per_second in {run_dir}/train (see the run's log)")
with open(rows, "a") as f:
    f.write(json.dumps(row) + "\n")
PY
}

record_failure() {  # engine what log
  printf '{"engine": "%s", "what": "%s", "note": "failed: see %s"}\n' "$1" "$2" "$3" >>"$ROWS"
}

train_ours() {  # size
  local dir="$WORK/ours-$1"
  if python -m textchem_jax.train --gin_file="models/t5_$1.gin" --gin_file=runs/pretrain.gin \
      --gin.MODEL_DIR="'$dir'" --gin.MIXTURE_OR_TASK_NAME="'textchem_demo'" \
      --gin.TASK_FEATURE_LENGTHS="{'inputs': $LENGTH, 'targets': $LENGTH}" --gin.TRAIN_STEPS="$STEPS" \
      --gin.BATCH_SIZE="$BATCH" --gin.DROPOUT_RATE=0.0 --gin.config.t5_config.dtype="'bfloat16'" \
      --gin.train_lib.train.log_period="$LOG_PERIOD" --gin.train_lib.train.eval_period=None \
      --gin.train_lib.train.eval_steps=1 --gin.infer_eval/run_config.DatasetConfig.num_examples=0 \
      >"$LOGS/ours-$1.log" 2>&1; then
    record_train ours "$1" "$dir" || record_failure ours "T5-$1 train step" "$LOGS/record.log"
  else
    record_failure ours "T5-$1 train step" "$LOGS/ours-$1.log"
  fi
}

train_t5x() {  # size
  local dir="$WORK/t5x-$1" repo
  repo="$(python -c 'import pathlib, t5x; print(pathlib.Path(t5x.__file__).resolve().parents[1])')"
  cat >"$WORK/t5x_$1.gin" <<GIN
from __gin__ import dynamic_registration
import __main__ as train_script
from t5x import utils
include 't5x/examples/t5/t5_1_0/$1.gin'
include 't5x/configs/runs/pretrain.gin'
include 'textchem_t5x.gin'
MIXTURE_OR_TASK_NAME = "textchem_demo"
TASK_FEATURE_LENGTHS = {"inputs": $LENGTH, "targets": $LENGTH}
TRAIN_STEPS = $STEPS
BATCH_SIZE = $BATCH
DROPOUT_RATE = 0.0
train_script.train.eval_period = $LOG_PERIOD
train_script.train.eval_steps = 1
utils.SaveCheckpointConfig.period = 1000000
GIN
  if python -m t5x.train --gin_search_paths="$WORK,gin_configs/t5x,$repo" --gin_file="t5x_$1.gin" \
      --gin.MODEL_DIR="'$dir'" >"$LOGS/t5x-$1.log" 2>&1; then
    record_train t5x "$1" "$dir" || record_failure t5x "T5-$1 train step" "$LOGS/record.log"
  else
    record_failure t5x "T5-$1 train step" "$LOGS/t5x-$1.log"
  fi
}

decode_t5x() {  # T5X's model from its own gin (t5_1_0/small.gin), random weights, decode_bench's shapes
  cat >"$WORK/t5x_decode.gin" <<'GIN'
from __gin__ import dynamic_registration
from t5x.examples.t5 import network
include 't5x/examples/t5/t5_1_0/small.gin'
include 'textchem_t5x.gin'
DROPOUT_RATE = 0.0
network.T5Config.vocab_size = 32128  # decode_bench's vocabulary size
GIN
  if ! python - "$ROWS" "$WORK" "${DECODE[@]}" <<'PY' >>"$LOGS/decode_t5x.log" 2>&1
import functools, json, pathlib, sys, time

import gin
import jax
import numpy as np
import t5x

options = {k: int(v) for k, v in (arg.lstrip("-").split("=") for arg in sys.argv[3:])}
batch, length, new_tokens, beams = options["batch"], options["input_length"], options["new_tokens"], options["beams"]
for folder in (sys.argv[2], pathlib.Path(t5x.__file__).resolve().parents[1], pathlib.Path("gin_configs/t5x").resolve()):
    gin.add_config_file_search_path(str(folder))
gin.parse_config_files_and_bindings(["t5x_decode.gin"], [])
model = gin.query_parameter("%MODEL").scoped_configurable_fn()
shapes = {"encoder_input_tokens": (batch, length), "decoder_input_tokens": (batch, new_tokens)}
params = model.get_initial_variables(jax.random.PRNGKey(0), shapes)["params"]
features = {"encoder_input_tokens": np.random.default_rng(0).integers(2, 32128, (batch, length)).astype(np.int32),
            "decoder_input_tokens": np.zeros((batch, new_tokens), np.int32)}
search = jax.jit(functools.partial(model.predict_batch_with_aux, num_decodes=beams, return_all_decodes=True))
start = time.perf_counter()
jax.block_until_ready(search(params, features))
compile_s = time.perf_counter() - start
times = []
for _ in range(options["repeats"]):
    start = time.perf_counter()
    jax.block_until_ready(search(params, features))
    times.append(time.perf_counter() - start)
row = {"engine": "t5x", "what": "T5-small beam decode", "shape": f"{batch} x {length} -> {new_tokens}, {beams} beams",
       "ms": min(times) * 1000, "rate": f"{batch * new_tokens / min(times):.0f} tokens/s",
       "note": f"first call {compile_s:.1f} s, stops at EOS"}
open(sys.argv[1], "a").write(json.dumps(row) + "\n")
PY
  then
    record_failure t5x "T5-small beam decode" "$LOGS/decode_t5x.log"
  fi
}

MODE="$([[ $SMOKE == 1 ]] && echo ' (smoke)' || true)"
# Each step runs under `timeout`, so one that hangs (a backend that never starts) costs its share, not the lease.
STEP_TIMEOUT="${GPU_CHECK_STEP_TIMEOUT:-240}"
timeout 120 python -c 'import jax, flax, optax, torch, transformers
print(f"gpu_check: JAX {jax.__version__} on {jax.devices()[0].device_kind}, flax {flax.__version__}, optax "
      f"{optax.__version__}, torch {torch.__version__} (cuda: {torch.cuda.is_available()}), transformers "
      f"{transformers.__version__}")' || echo "gpu_check: JAX or torch did not start within 120 s (exit $?)"
echo "1. model level: train steps (batch $BATCH x $LENGTH/$LENGTH, bfloat16), then beam decode$MODE"
for size in $SIZES; do
  echo; timeout "$STEP_TIMEOUT" python benchmarks/train_bench.py --size="$size" --batch="$BATCH" \
    --inputs="$LENGTH" --targets="$LENGTH" --dtype=bfloat16 --steps="$BENCH_STEPS" --rounds=2 --no-memory \
    --no-profile 2>"$LOGS/train_bench-$size.log" \
    || echo "train_bench at T5-$size failed or timed out (exit $?): see $LOGS/train_bench-$size.log"
done
echo; timeout "$STEP_TIMEOUT" python benchmarks/decode_bench.py --dtype=bfloat16 --rounds=1 "${DECODE[@]}" \
  2>"$LOGS/decode_bench.log" || echo "decode_bench failed or timed out (exit $?): see $LOGS/decode_bench.log"

echo; echo "2. whole pipeline: train CLIs on textchem_demo ($SIZES, batch $BATCH x $LENGTH/$LENGTH, $STEPS steps)$MODE"
if [[ "$HAS_PIPELINE" == 0 ]]; then
  echo "  skipped: python -c 'import seqio, tensorflow' fails (pip install -e '.[gpu]' installs them)"
  exit 0
fi
for size in $SIZES; do
  echo "  ours: T5-$size train"; train_ours "$size"
  if [[ "$HAS_T5X" == 1 ]]; then echo "  t5x: T5-$size train"; train_t5x "$size"; fi
done
if [[ "$HAS_T5X" == 1 ]]; then
  echo "  t5x: T5-small beam decode"; decode_t5x
else
  echo "  t5x: skipped (python -c 'import t5x' fails: put a T5X checkout on PYTHONPATH)"
fi

python - "$ROWS" <<'PY'
import json, sys

rows = [json.loads(line) for line in open(sys.argv[1])]
peaks = sorted({row["peak"] for row in rows if "peak" in row})
print(f"\n{'engine':<7}{'what':<24}{'shape':<30}{'ms':>9}{'throughput':>18}{'MFU':>8}  note")
for row in rows:
    ms = f"{row['ms']:.1f}" if "ms" in row else "-"
    print(f"{row['engine']:<7}{row['what']:<24}{row.get('shape', ''):<30}{ms:>9}{row.get('rate', '-'):>18}"
          f"{row.get('mfu', '-'):>8}  {row.get('note', '')}")
print(f"MFU = analytic model FLOPs per step x steps/s / peak ({'; '.join(peaks)}); goal 45% on an H200")
PY
