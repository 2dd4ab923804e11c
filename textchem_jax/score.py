"""`textchem-score`: score a jsonl file of predictions with each task's metrics and print a table.

Each line is `{"task": ..., "target": ..., "prediction": ...}` (a prediction may be a list of beams,
best first; `input` is optional). Without `--predictions` the packaged example file is scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
from collections.abc import Callable

EXAMPLE_PREDICTIONS = pathlib.Path(__file__).parent / "examples" / "predictions.jsonl"  # local only: packaged


def _metric_functions() -> dict[str, Callable]:
    from textchem_jax import metrics

    return {
        "textchem_forward": metrics.forward_metrics,
        "textchem_retro": metrics.retro_metrics,
        "textchem_paragraph2actions": metrics.paragraph2actions_metrics,
        "textchem_text2mol": metrics.text2mol_metrics,
        "textchem_mol2text": metrics.mol2text_metrics,
    }


def read_predictions(path: str | os.PathLike) -> dict[str, tuple[list, list]]:
    """Rows grouped by task as (targets, predictions); a malformed line raises with file:line."""
    known = _metric_functions()
    grouped: dict[str, tuple[list, list]] = {}
    from etils import epath

    with epath.Path(path).open("r", encoding="utf-8") as lines:  # local or gs://
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                task, target, prediction = row["task"], row["target"], row["prediction"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(
                    f"{path}:{number}: expected a JSON object with task, target and prediction ({error})"
                ) from None
            if task not in known:
                raise ValueError(f"{path}:{number}: unknown task {task!r}; known: {', '.join(sorted(known))}")
            targets, predictions = grouped.setdefault(task, ([], []))
            targets.append(target)
            predictions.append(prediction)
    return grouped


def score(path: str | os.PathLike) -> dict[str, dict[str, float | None]]:
    functions = _metric_functions()
    return {task: functions[task](targets, preds) for task, (targets, preds) in read_predictions(path).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="textchem-score", description=__doc__.splitlines()[0])
    from etils import epath  # user paths: local or gs://

    parser.add_argument("--predictions", type=epath.Path, default=epath.Path(EXAMPLE_PREDICTIONS), help="jsonl file to score")
    parser.add_argument("--output", type=epath.Path, help="also write the metrics as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.predictions.is_file():
        parser.error(f"no predictions file at {args.predictions}")
    try:
        results = score(args.predictions)
    except ValueError as error:
        print(f"textchem-score: {error}", file=sys.stderr)
        return 2
    from textchem_jax.metrics.report import format_table, versions_line

    print(f"Scored {args.predictions}\n{format_table(results)}\n{versions_line()}")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
