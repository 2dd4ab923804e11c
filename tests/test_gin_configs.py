"""Every shipped gin config parses, binds its REQUIRED macros, and builds its model; e2-CLM trains from gin."""

from __future__ import annotations

import pathlib

import gin
import jax
import numpy as np
import pytest

import tasks  # noqa: F401  (registers the demo tasks the inference test evaluates)

from textchem_jax import launch, partitioning
from textchem_jax import trainer as trainer_lib

CONFIGS = pathlib.Path(launch.GIN_CONFIGS)
EXPERIMENTS = sorted(p.relative_to(CONFIGS).as_posix() for p in (CONFIGS / "experiments").glob("*.gin"))


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_parses_and_builds_its_model(experiment, tmp_path):
    launch.parse_gin([experiment], [f"MODEL_DIR='{tmp_path}'"])
    from textchem_jax import train as train_lib

    assert gin.query_parameter("train_lib.train.model_dir") is not None
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    tokens = np.ones((1, 4), np.int32)
    extra = {"input_domain": np.ones((1,), np.int32)} if trainer_lib.reads_input_domain(model) else {}
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, tokens, **extra)["params"])
    assert params and train_lib.train is not None


@pytest.mark.parametrize("run", ["runs/eval.gin", "runs/infer.gin"])
def test_run_configs_with_a_model(run, tmp_path):
    launch.parse_gin(["models/t5_tiny.gin", run], [f"CHECKPOINT_PATH='{tmp_path}'", f"EVAL_OUTPUT_DIR='{tmp_path}'",
                                                   f"INFER_OUTPUT_DIR='{tmp_path}'", "MIXTURE_OR_TASK_NAME='textchem_demo'",
                                                   "TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 8}"])  # fmt: skip


def test_wrong_include_order_or_missing_file_is_explained():
    with pytest.raises(launch.ConfigError, match="gin_search_paths"):
        launch.parse_gin(["experiments/no_such.gin"], [])
    with pytest.raises(launch.ConfigError, match="macro MODEL is used but never defined.*models/t5_small.gin"):
        launch.parse_gin(["runs/pretrain.gin"], ["MODEL_DIR='/tmp/x'", "MIXTURE_OR_TASK_NAME='textchem_demo'",
                                                 "TASK_FEATURE_LENGTHS={}", "TRAIN_STEPS=1"])  # fmt: skip
    with pytest.raises(launch.ConfigError, match="TRAIN_STEPS is required .*runs/pretrain.gin"):
        launch.parse_gin(["models/t5_tiny.gin", "runs/pretrain.gin"],
                         ["MODEL_DIR='/tmp/x'", "MIXTURE_OR_TASK_NAME='textchem_demo'", "TASK_FEATURE_LENGTHS={}"])  # fmt: skip


def test_e2clm_variant_from_gin_trains_with_frozen_encoder_untouched():
    launch.parse_gin(
        ["models/e2clm_small.gin"],
        ["e2clm.e2clm_config.size='tiny'", "e2clm.e2clm_config.aggregation='select'",
         "e2clm.e2clm_config.freeze_chemistry=True", "DROPOUT_RATE=0.0"],
    )  # fmt: skip
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    assert trainer_lib.reads_input_domain(model)
    from textchem_jax import train as train_lib

    dataset = train_lib.train_dataset("textchem_demo", {"inputs": 48, "targets": 32}, 8, with_input_domain=True)
    batch = {k: v.numpy() for k, v in next(iter(dataset)).items()}
    assert set(np.unique(batch["input_domain"])) == {0, 1}  # packed rows mix text and chemistry examples
    run = trainer_lib.Trainer(model, trainer_lib.make_optimizer("adamw", 1e-2), partitioning.make_mesh())
    state = run.init_state(jax.random.key(0), batch)
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
    from textchem_jax.evaluate import InferenceEvaluator
    from textchem_jax.models.e2clm import E2Clm, e2clm_config
    from textchem_jax.data.seqio_tasks import vocabulary_size

    model = E2Clm(e2clm_config("tiny", "1.1", vocabulary_size(), aggregation="cross_attention", dropout_rate=0.0))
    tokens = np.ones((2, 8), np.int32)
    params = model.init(jax.random.key(0), tokens, tokens, tokens, input_domain=np.array([0, 1]))["params"]
    import flax.linen as nn

    evaluator = InferenceEvaluator("textchem_demo_forward", str(tmp_path), {"inputs": 64, "targets": 8}, num_examples=4)
    results = evaluator.evaluate(model, nn.meta.unbox(params), partitioning.make_mesh(), step=1, batch_size=4)
    assert set(results["textchem_demo_forward"]) == {"accuracy", "invalid_rate"}
    assert (tmp_path / "textchem_demo_forward-000001.jsonl").exists()
