"""`textchem-eval`: inference metrics of a checkpoint on a split, into `EVAL_OUTPUT_DIR` (T5X's layout).

  textchem-eval --gin_file=models/t5_1_1_tiny.gin --gin_file=runs/eval.gin \\
    --gin.CHECKPOINT_PATH="'/tmp/run'" --gin.EVAL_OUTPUT_DIR="'/tmp/eval'" \\
    --gin.MIXTURE_OR_TASK_NAME="'textchem_demo'" --gin.TASK_FEATURE_LENGTHS="{'inputs': 160, 'targets': 128}"
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from textchem_jax.evaluator import DecodeFn, InferenceEvaluator
from textchem_jax.metrics.captions import check_tokenizer
from textchem_jax.metrics.tables import format_table, versions_line


def evaluate(
    *,
    model,
    checkpoint_path: str,
    dataset_cfg,
    output_dir: str,
    decode_fn: DecodeFn | None = None,
    mesh=None,
    caption_tokenizer: str | None = None,
    notations: Sequence[str] = (),
) -> dict:
    """`textchem-eval`: inference metrics of a checkpoint (ours, or a Hugging Face import: step 0) on a split;
    `caption_tokenizer` a local SciBERT folder for MolT5's caption BLEU/METEOR (gin: CAPTION_TOKENIZER);
    `notations` (gin: NOTATIONS) also evaluates the SMILES-input tasks on their inputs rewritten in each
    (`chem.notations.variant_names`) and prints each metric's drop, into `output_dir/notations/`."""
    from textchem_jax import partitioning
    from textchem_jax.model_loading import checkpoint_step, load_for_inference

    if caption_tokenizer is not None:
        check_tokenizer(caption_tokenizer)  # before the checkpoint is read and the split decoded
    mesh = partitioning.make_mesh() if mesh is None else mesh
    params = load_for_inference(model, checkpoint_path, mesh)
    evaluator = InferenceEvaluator(model, dataset_cfg, output_dir, mesh, decode_fn, caption_tokenizer)
    results = evaluator.evaluate(params, step=checkpoint_step(checkpoint_path))  # files named by its step, as T5X
    print(format_table(results, evaluator.examples))
    if notations:
        from textchem_jax.evaluator import notation_robustness
        from textchem_jax.metrics.tables import robustness_markdown

        by_notation = notation_robustness(model, dataset_cfg, params, mesh, os.path.join(output_dir, "notations"),
                                          list(notations), step=checkpoint_step(checkpoint_path),
                                          decode_fn=decode_fn, caption_tokenizer=caption_tokenizer, originals=results)  # fmt: skip
        print(robustness_markdown({"metrics": by_notation}))
    print(versions_line())
    print(f"predictions and metrics: {output_dir}")
    return results


def main() -> int:
    from textchem_jax import launch

    launch.run_configured("textchem_jax.evaluate.evaluate", "textchem-eval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
