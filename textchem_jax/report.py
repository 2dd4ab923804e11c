"""`textchem-report DIR`: one self-contained HTML page of a run (MODEL_DIR or textchem-eval output) or a sweep (SWEEP_DIR).

  textchem-report /tmp/textchem_quickstart          # -> /tmp/textchem_quickstart/report/index.html
  textchem-report /tmp/sweep --output_dir=/tmp/sweep_report

A run's page (a textchem-train MODEL_DIR or a textchem-eval output folder): its configuration, each task's metrics
at its last evaluated step (beside the paper's where the evaluation covered the paper's whole test set), loss and
metric curves, molecule grids (RDKit depictions of input, target and predictions with validity and Morgan Tanimoto
to the target) for text2mol, forward and retro, captions beside their molecules for mol2text, invalid predicted
SMILES by RDKit's reason, the notation-robustness tables when `textchem-robustness` ran, and the library versions
that move the numbers. A sweep's page: its table, its plots and the versions each point was trained with. Images
are PNG files in the output folder, also embedded in the page (it opens anywhere on its own).
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import os
import posixpath
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from textchem_jax import figures, provenance, run_results
from textchem_jax.catalogue import (DOMAINS, PAPER_RESULTS, PAPER_RESULTS_SOURCE, PAPER_TEST_EXAMPLES, PROMPTS, TASKS,
                                    task_of)
from textchem_jax.cli import command, parse_args, quiet_libraries
from textchem_jax.metrics.tables import LOWER_IS_BETTER, number, robustness_tables
from textchem_jax.paths import absolute, is_remote, makedirs

GRID_ROWS = 8  # examples per molecule grid
# RDKit's reasons for rejecting a SMILES, in the words a chemist would group them by.
ERROR_KINDS = (  # first match wins: "non-ring atom marked aromatic" is an aromaticity problem, not a ring closure
    ("valence", re.compile(r"valence", re.I)),
    ("kekulization", re.compile(r"kekul|aromatic", re.I)),
    ("ring closure", re.compile(r"ring|unclosed", re.I)),
    ("parentheses", re.compile(r"parenthes", re.I)),
    ("empty", re.compile(r"empty|without atoms", re.I)),
    ("syntax", re.compile(r"parse error|syntax|whitespace|ascii", re.I)),
)
_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;vertical-align:top;overflow-wrap:anywhere}td{max-width:560px}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}img{max-width:100%}
.grid td{text-align:center;font-size:12px;max-width:240px;overflow-wrap:anywhere}code{overflow-wrap:anywhere}.note{color:#666;font-size:13px}.scroll{overflow-x:auto;max-width:100%}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}"""


def error_kind(reason: str | None) -> str:
    """The group of an RDKit rejection reason (`chem.canonicalize_with_reason`): valence, ring closure, ..."""
    for kind, pattern in ERROR_KINDS:
        if reason and pattern.search(reason):
            return kind
    return "other"


def _png_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def html_table(header: Sequence[str], rows: Sequence[Sequence], css: str = "") -> str:
    """An HTML table; numbers right-aligned with 4 decimals, None and NaN as n/a, strings escaped unless they
    are markup we made (`Markup`)."""
    def cell(value) -> str:
        if isinstance(value, Markup):
            return f"<td>{value}</td>"
        if isinstance(value, Formatted):
            return f'<td class="num">{html.escape(value)}</td>'
        if value is None or isinstance(value, float):
            return f'<td class="num">{number(value)}</td>'
        if isinstance(value, int):
            return f'<td class="num">{value:,}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{css}"><tr>{head}</tr>{body}</table></div>'  # wide tables scroll


class Markup(str):
    """HTML we generated ourselves (an image tag): put into a table cell as it is."""


class Formatted(str):
    """A value already written out (a distance in characters, "—"): right-aligned in its cell like the numbers."""


class Page:
    """The HTML page being written, and the PNG files beside it."""

    def __init__(self, output_dir: str, title: str):
        self.output_dir, self.title, self.parts, self.images = output_dir, title, [], []
        makedirs(output_dir)

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, saved: str | tuple[str, str] | None, alt: str) -> None:
        """Embeds a PNG written beside the page (a path, or `figures.plot_lines`' (png, svg); None: nothing)."""
        import tensorflow as tf

        if saved is None:
            return
        png_path = saved if isinstance(saved, str) else saved[0]
        with tf.io.gfile.GFile(png_path, "rb") as f:
            self.parts.append(f"<p>{_png_tag(f.read(), alt)}</p>")
        self.images.append(png_path)

    def write(self) -> str:
        import tensorflow as tf

        path = os.path.join(self.output_dir, "index.html")
        document = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                    f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>{''.join(self.parts)}</body></html>")  # fmt: skip
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(document)
        return path


def depiction(smiles: str | None, size: tuple[int, int] = (220, 160)) -> bytes | None:
    """PNG of an RDKit depiction of `smiles` (fragment bonds drawn as separate fragments), None if unreadable."""
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    from textchem_jax.chem.smiles import quiet_rdkit

    if not smiles:
        return None
    with quiet_rdkit():
        mol = Chem.MolFromSmiles(smiles.replace("~", "."))
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    drawer = rdMolDraw2D.MolDraw2DCairo(*size)
    drawer.DrawMolecule(rdMolDraw2D.PrepareMolForDrawing(mol, kekulize=True) if mol.GetNumAtoms() < 200 else mol)
    drawer.FinishDrawing()
    return drawer.GetDrawingText()


def _molecule_cell(smiles: str | None, note: str = "", undrawn: str = "not a molecule RDKit reads") -> Markup:
    """A depiction of `smiles` over its text and `note`; `undrawn` where there is nothing to draw."""
    png = depiction(smiles)
    text = html.escape(smiles or "")
    picture = _png_tag(png, smiles or "") if png else f"<i>{html.escape(undrawn)}</i>"
    return Markup(f"{picture}<br><code>{text}</code>{'<br>' + html.escape(note) if note else ''}")


def prediction_validity(task: str, target: str, prediction: str) -> tuple[bool, float | None]:
    """(valid, Morgan radius-2 Tanimoto to the target or None) of a predicted SMILES by its task's own metric, so the
    grid agrees with the numbers above it: text2mol's `validity` is MolT5's (`score_molecule_pair` on the strings as
    written: an empty string is a molecule without atoms, valid), forward's and retro's `invalid_rate` is
    `molecule_key`'s (an empty string is invalid). text2mol's rule for every task had an empty forward prediction
    "valid" beside invalid_rate 1.0."""
    from textchem_jax.chem import molecule_key
    from textchem_jax.metrics.molecules import score_molecule_pair

    if task == "text2mol":
        valid, _, fingerprints = score_molecule_pair((target, prediction))
        return valid, (fingerprints[2] if fingerprints else None)
    if molecule_key(prediction) is None:
        return False, None
    _, _, fingerprints = score_molecule_pair((target.replace("~", "."), prediction.replace("~", ".")))  # `~`: a fragment
    return True, (fingerprints[2] if fingerprints else None)


def _beam_cell(task: str, target: str, beam: str) -> Markup:
    """A predicted molecule with its verdict under its task's rule (`prediction_validity`)."""
    valid, tanimoto = prediction_validity(task, target, beam)
    similarity = "Tanimoto n/a" if tanimoto is None else f"Tanimoto {tanimoto:.2f}"
    if not beam.strip():
        verdict = f"valid by MolT5's rule (an empty string counts), {similarity}" if valid else "invalid"
        return _molecule_cell(beam, verdict, undrawn="empty prediction")
    return _molecule_cell(beam, f"valid, {similarity}" if valid else "invalid",
                          undrawn="no atoms to draw" if valid else "not a molecule RDKit reads")  # fmt: skip


def _beams(prediction) -> list[str]:
    return [str(p) for p in prediction] if isinstance(prediction, list) else [str(prediction)]


def _input_text(row: Mapping) -> str:
    """The example's input without its task prompt."""
    text = str(row.get("input", {}).get("inputs_pretokenized", ""))
    prompt = next((p for p in PROMPTS.values() if text.startswith(p)), "")
    return text[len(prompt) :]


def _target_text(row: Mapping) -> str:
    target = row.get("target")
    return str(target.get("target", "")) if isinstance(target, Mapping) else str(target)


def molecule_grid(task: str, rows: Sequence[Mapping]) -> str:
    """HTML table: input, target and each beam, depicted, with validity and Tanimoto (chemistry outputs), or
    the molecule beside its target and predicted captions (mol2text)."""
    lines = []
    for row in rows[:GRID_ROWS]:
        source, target = _input_text(row), _target_text(row)
        beams = _beams(row.get("prediction", ""))
        if task == "mol2text":
            lines.append([_molecule_cell(source), target, beams[0]])
            continue
        first = _molecule_cell(source) if DOMAINS[task][0] == "chemistry" else source
        cells = [first, _molecule_cell(target)]
        cells += [_beam_cell(task, target, beam) for beam in beams]
        lines.append(cells)
    width = max((len(r) for r in lines), default=0)
    if task == "mol2text":
        header = ["molecule (input)", "target caption", "predicted caption"]
    else:
        header = ["input", "target", *(["prediction"] if width == 3 else [f"beam {i + 1}" for i in range(width - 2)])]
    return html_table(header, lines, css="grid")


def invalid_breakdown(task: str, rows: Sequence[Mapping]) -> dict[str, int]:
    """Top predictions invalid by the task's own rule (`prediction_validity`), counted by the kind of RDKit's reason;
    "valid" counts the rest (text2mol's empty predictions among them, as its validity counts them)."""
    from textchem_jax.chem import canonicalize_with_reason

    counts: dict[str, int] = {"valid": 0}
    for row in rows:
        top = _beams(row.get("prediction", ""))[0]
        if prediction_validity(task, _target_text(row), top)[0]:
            kind = "valid"
        else:  # "other" where RDKit gives no reason (a string the task's rule rejects and canonicalize reads)
            kind = error_kind(canonicalize_with_reason(top)[1])
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def paper_columns(task_name: str, split: str | None) -> dict[str, Mapping[str, float]]:
    """{paper model: {metric: value}} for a task that is the paper's own test set (real data, test split); whether
    an evaluation covered all of it is `not_comparable_with_paper`'s question."""
    task = task_of(task_name)
    if task is None or split != "test" or "demo" in task_name:
        return {}
    return {model: results[task] for model, results in PAPER_RESULTS.items() if task in results}


def no_paper_numbers(task_name: str, split: str | None) -> str:
    """Why `paper_columns` gave a task nothing, the first reason that holds: forward and retro on the USPTO test
    splits were said to be "not the paper's test set" when catalogue.PAPER_RESULTS holds no numbers for them."""
    task = task_of(task_name)
    if task is None:
        return "a task of your own: no paper numbers"
    if not any(task in results for results in PAPER_RESULTS.values()):
        return f"no paper numbers: catalogue.PAPER_RESULTS holds none for {task}"
    if "demo" in task_name:
        return "the demo corpus, not the paper's test set: no paper numbers beside it"
    if split is None:
        return "the split evaluated is not bound in config.gin, so not known to be the paper's test set: no paper numbers"
    return f"the {split} split, not the paper's test set: no paper numbers beside it"


NOT_IN_PAPER = "—"  # a metric the paper does not report, as README's tables write it; n/a: not computable


def not_comparable_with_paper(task_name: str, num_examples: int | None) -> str | None:
    """Why an evaluation of `num_examples` rows of the task's test split is not comparable with the paper's numbers,
    or None where it covered the paper's whole test set: the paper's ChEBI-20 numbers were shown beside a run
    evaluated on 10 of its 3,300 rows, and paragraph2actions' beside the 10-sentence public sample."""
    task = task_of(task_name)
    if task not in PAPER_TEST_EXAMPLES:
        return f"the size of the paper's {task} test set is not recorded (catalogue.PAPER_TEST_EXAMPLES): no paper numbers"
    published = PAPER_TEST_EXAMPLES[task]
    if published is None:
        return (f"the paper's {task} test set was not released (the public files are a 100-sentence sample): "
                "not comparable with the paper")  # fmt: skip
    if num_examples is None:
        return "no predictions file at this step, so the examples evaluated are unknown: no paper numbers beside it"
    if num_examples != published:
        return f"evaluated on {num_examples:,} of {published:,} test examples: not comparable with the paper"
    return None


# Metrics that are not fractions: shown with their unit and 2 decimals (text2mol's levenshtein read "170.1667",
# four decimals like a fraction).
METRIC_UNITS = {"levenshtein": "characters"}


def _metric_label(name: str) -> str:
    return f"{name} ({METRIC_UNITS[name]})" if name in METRIC_UNITS else name


def _metric_cell(name: str, value):
    """A metric's value for `html_table`: a number with a unit as 2 decimals, any other as it is (n/a for None)."""
    if name in METRIC_UNITS and isinstance(value, (int, float)) and not math.isnan(value):
        return Formatted(f"{value:.2f}")
    return value


def _versions_table(recorded: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """This environment's versions; beside them, those each of `recorded` ({who: the `provenance` entry of what
    computed its numbers}: the run, or each sweep point) recorded, one column for those that recorded the same, each
    library that differs marked. The sweep page showed only its own versions."""
    now = provenance.versions()
    columns: dict[tuple, list[str]] = {}
    for who, entry in (recorded or {}).items():
        columns.setdefault(tuple(sorted(entry.get("versions", {}).items())), []).append(who)
    if not columns:
        return html_table(["library", "version"], list(now.items()))
    then = [dict(versions) for versions in columns]
    rows = [[name, *[v.get(name, "not recorded") for v in then], version,
             "differs" if any(v.get(name) not in (None, version) for v in then) else ""]
            for name, version in now.items()]  # fmt: skip
    recorders = [f"recorded with {', '.join(who)}" for who in columns.values()]
    return html_table(["library", *recorders, "this report", ""], rows)


LOSS_PANEL = "loss per real target token"
LOSS_NORMALIZING_FACTOR_BINDING = r"[\w./]*\.loss_normalizing_factor"  # T5X's model's (models.EncoderDecoderModel)
# The inference evaluation's split, ours or T5X's (`utils.`: a T5X run's report said "split: ?" and gave a test-split
# run no paper numbers).
INFER_EVAL_SPLIT_BINDING = r"infer_eval/(?:run_config|utils)\.DatasetConfig\.split"
# A textchem-eval folder's split: its DatasetConfig is unscoped (runs/eval.gin, runs/eval_released.gin, T5X's eval.gin).
EVAL_SPLIT_BINDING = r"(?:run_config|utils)\.DatasetConfig\.split"


def per_token_loss(series: Mapping[str, list[tuple[int, float]]], config: str) -> list[tuple[int, float]] | None:
    """A run's loss per real target token from its `train/` or `training_eval/` scalars and its config.gin text; None
    where it logged no such figure. Ours log it as `loss`. T5X's `loss` is what its model minimises: under T5X's
    default LOSS_NORMALIZING_FACTOR (None) each batch's sum (608.5 on the quickstart's validation, against 5.80 per
    token), whose `loss_per_nonpadding_target_token` is the per-token figure; under 'NUM_REAL_TARGET_TOKENS' (our T5X
    configs) `loss` is, and `loss_per_nonpadding_target_token` is divided by the tokens twice."""
    if "loss_per_nonpadding_target_token" not in series:  # only T5X logs it
        return series.get("loss", [])
    factor = run_results.config_binding(config, LOSS_NORMALIZING_FACTOR_BINDING)
    if factor is None:
        return series["loss_per_nonpadding_target_token"]
    if isinstance(factor, str) and factor.upper().endswith("NUM_REAL_TARGET_TOKENS"):  # any case, or T5X's enum
        return series.get("loss", [])
    return None


def evaluation_split(config: str) -> str | None:
    """The split a folder's inference evaluation read, from its config.gin text: a training run's `infer_eval/`
    DatasetConfig, else a textchem-eval folder's unscoped one (runs/eval.gin, runs/eval_released.gin): a test-split
    evaluation folder was said to be "not the paper's test set"."""
    for binding in (INFER_EVAL_SPLIT_BINDING, EVAL_SPLIT_BINDING):
        split = run_results.config_binding(config, binding)
        if split is not None:
            return split
    return None


def _evaluated_steps(steps: Mapping[str, int]) -> str:
    """The steps evaluated: "step 30", or each task's own where they differ (separate textchem-eval runs)."""
    distinct = sorted(set(steps.values()))
    if len(distinct) == 1:
        return f"step {distinct[0]}"
    return "each task's own step (" + ", ".join(f"{task} {step}" for task, step in sorted(steps.items())) + ")"


RUN_FIGURES = ("loss_curves", "metric_curves")  # the figure files a run page writes beside itself
RUN_PAGE_TITLE = "Text+Chem T5 run"  # how a run page of ours begins its <title>


def _remove_unused_figures(output_dir: str, written: Sequence[str]) -> None:
    """Deletes the run page's figure files (RUN_FIGURES) this write did not produce: a second report into the same
    folder left the first one's metric curves beside a page that no longer shows them. Only beside a run page of
    ours (a user's own loss_curves.png in --output_dir was deleted; a sweep folder's are the sweep's)."""
    import tensorflow as tf

    page = os.path.join(output_dir, "index.html")
    if tf.io.gfile.exists(os.path.join(output_dir, "sweep.csv")) or not tf.io.gfile.exists(page):
        return
    with tf.io.gfile.GFile(page) as f:
        if f"<title>{RUN_PAGE_TITLE}" not in f.read():
            return
    for stem in RUN_FIGURES:
        for extension in ("png", "svg"):
            path = os.path.join(output_dir, f"{stem}.{extension}")
            if path not in written and tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)


CHECKPOINT_PATH_BINDING = r"eval_lib\.evaluate\.checkpoint_path"  # a textchem-eval folder's config.gin (runs/eval.gin)


def robustness_advice(model_dir: str, config: str, trains: bool) -> str:
    """The textchem-robustness command whose results this page shows (in MODEL_DIR/robustness). An evaluation folder
    holds no checkpoint (`--model_dir=EVAL` alone failed): its config.gin gives the model, mixture, feature lengths
    and data folder, and its provenance the checkpoint it read (else config.gin's CHECKPOINT_PATH); in words where
    it records none."""
    import shlex

    output = shlex.quote(os.path.join(model_dir, "robustness"))  # where run_report reads it
    if trains:
        return f"run textchem-robustness --model_dir={shlex.quote(model_dir)}"
    evaluated = [entry for entry in provenance.history(model_dir) if entry.get("checkpoint")]
    checkpoint = evaluated[-1]["checkpoint"] if evaluated else run_results.config_binding(config, CHECKPOINT_PATH_BINDING)
    if not isinstance(checkpoint, str) or checkpoint.startswith("%"):
        return (f"{model_dir} records no checkpoint it evaluated: run textchem-robustness with --model_dir set to the "
                f"run (or textchem-convert directory) that was evaluated and --output_dir={output}, where this page looks")  # fmt: skip
    split = (evaluated[-1].get("split") if evaluated else None) or evaluation_split(config)
    return (f"run textchem-robustness --model_dir={shlex.quote(model_dir)} --checkpoint_path={shlex.quote(checkpoint)}"
            + (f" --split={shlex.quote(split)}" if isinstance(split, str) else "") + f" --output_dir={output}")


def run_report(model_dir: str, output_dir: str) -> str:
    """Writes the page of a training run or of a textchem-eval output folder (no training: no training curves);
    returns its path."""
    import tensorflow as tf

    from textchem_jax import robustness

    page = Page(output_dir, f"{RUN_PAGE_TITLE} {model_dir}")
    history = run_results.metric_history(model_dir)
    last = run_results.last_evaluations(history)
    params = run_results.parameter_count(model_dir)
    config_path = os.path.join(model_dir, run_results.RUN_CONFIG_FILE)
    config = ""
    if tf.io.gfile.exists(config_path):
        with tf.io.gfile.GFile(config_path) as f:
            config = f.read()
    split = evaluation_split(config)
    trained_step = run_results.latest_step(model_dir)
    train_steps = run_results.config_binding(config, "TRAIN_STEPS")
    # from the folder: an evaluation folder's config.gin may bind TRAIN_STEPS (an experiment gin, the run's own)
    trains = trained_step > 0 or tf.io.gfile.isdir(os.path.join(model_dir, "train"))
    unfinished = trains and isinstance(train_steps, int) and trained_step < train_steps  # not "final": still training
    steps = {task_name: row["step"] for task_name, row in last.items()}
    if not steps:
        evaluated = "no inference evaluation yet"
    elif not trains:
        evaluated = f"evaluated at {_evaluated_steps(steps)}"
    elif unfinished:
        evaluated = (f"latest evaluation at {_evaluated_steps(steps)}; the run is at step {trained_step} of "
                     f"{train_steps} (still training, or stopped)")  # fmt: skip
    else:
        evaluated = f"final evaluation at {_evaluated_steps(steps)}"
    summary = [evaluated, *([f"{params:,} parameters"] if params else [])]
    page.note("; ".join([*summary, f"inference evaluation split: {split or 'not bound in config.gin'}"]))
    rows_by_task = {task_name: run_results.predictions(model_dir, task_name, step) for task_name, step in steps.items()}

    page.heading("Metrics of the latest evaluation" if unfinished else "Final metrics")
    for task_name, row in sorted(last.items(), key=lambda item: _order(item[0])):
        count = len(rows_by_task[task_name]) or None
        papers = paper_columns(task_name, split)
        reason = not_comparable_with_paper(task_name, count) if papers else None
        shown = {} if reason else papers
        header = ["metric", f"this run (step {row['step']})", *[f"{m} (paper)" for m in shown]]
        rows = [[_metric_label(name), _metric_cell(name, value),
                 *[_metric_cell(name, shown[m][name]) if name in shown[m] else Formatted(NOT_IN_PAPER) for m in shown]]
                for name, value in row.items() if name != "step"]  # fmt: skip
        page.heading(task_name if count is None else f"{task_name} ({count:,} example{'' if count == 1 else 's'})", 3)
        page.raw(html_table(header, rows))
        if reason:
            page.note(reason)
        elif not papers:
            page.note(no_paper_numbers(task_name, split))
    page.note(f"Paper numbers ({NOT_IN_PAPER}: not in the paper; n/a: could not be computed): {PAPER_RESULTS_SOURCE}")

    written, several_steps = [], any(len(rows) > 1 for rows in history.values())
    if trains:
        page.heading("Training curves")
        train = run_results.scalars(os.path.join(model_dir, "train"))
        held_out = run_results.teacher_forced_scalars(model_dir)
        train_loss, held_out_loss = per_token_loss(train, config), per_token_loss(held_out, config)
        curves = {LOSS_PANEL: {"train": train_loss or [], "validation (teacher-forced)": held_out_loss or []},
                  "token accuracy": {"train": train.get("accuracy", []),
                                     "validation (teacher-forced)": held_out.get("accuracy", [])}}  # fmt: skip
        saved = figures.plot_lines(os.path.join(output_dir, "loss_curves"), curves, xlabel="step", columns=2)
        written += saved or []
        page.figure(saved, "loss curves")
        if train_loss is None or held_out_loss is None:
            factor = run_results.config_binding(config, LOSS_NORMALIZING_FACTOR_BINDING)
            page.note(f"T5X's LOSS_NORMALIZING_FACTOR = {factor!r}: its loss is not per real target token, so it is "
                      "not plotted (bind 'NUM_REAL_TARGET_TOKENS', as gin_configs/t5x/textchem_t5x.gin does)")  # fmt: skip
    elif several_steps:
        page.heading("Metrics by checkpoint step")  # an evaluation folder of several checkpoints (CHECKPOINT_STEPS)
    metric_panels = {}
    for task_name, rows in history.items():
        for name in rows[-1]:
            if name != "step":
                metric_panels[f"{task_of(task_name) or task_name}/{name}"] = {"": [(r["step"], r.get(name)) for r in rows]}
    if trains or several_steps:
        saved = figures.plot_lines(os.path.join(output_dir, "metric_curves"), metric_panels, xlabel="step", columns=4)
        written += saved or []
        page.figure(saved, "metric curves")
    if trains and history and all(len(rows) < 2 for rows in history.values()):
        page.note("one inference evaluation so far: the metric curves have one point each (set train_lib.train.eval_period "
                  "to evaluate during training)")  # fmt: skip
    _remove_unused_figures(output_dir, written)

    page.heading("Predictions")
    breakdown, empty_valid = {}, {}
    for task_name in sorted(last, key=_order):
        task, rows = task_of(task_name), rows_by_task[task_name]
        if task is None or not rows:
            continue
        shown = min(GRID_ROWS, len(rows))
        page.heading(f"{task_name}: first {shown} of {len(rows)} examples, step {steps[task_name]}", 3)
        if task == "paragraph2actions":
            page.raw(html_table(["paragraph", "target actions", "predicted actions"],
                                [[_input_text(r), _target_text(r), _beams(r["prediction"])[0]] for r in rows[:GRID_ROWS]]))  # fmt: skip
            continue
        page.raw(molecule_grid(task, rows))
        if DOMAINS[task][1] == "chemistry":
            breakdown[task_name] = invalid_breakdown(task, rows)
            if task == "text2mol":
                empty_valid[task_name] = sum(not _beams(r.get("prediction", ""))[0] for r in rows)
    if breakdown:
        page.heading("Invalid SMILES by RDKit's reason (top predictions)")
        kinds = ["valid", *[k for k, _ in ERROR_KINDS], "other"]
        page.raw(html_table(["task", *kinds, "total"], [[t, *[c.get(k, 0) for k in kinds], sum(c.values())] for t, c in breakdown.items()]))
        page.note("valid and invalid as each task's metric counts them (text2mol: validity; forward, retro: invalid_rate)"
                  + "".join(f"; {t}'s validity is MolT5's, under which an empty prediction is valid: {n} of its valid "
                            "here are empty" for t, n in empty_valid.items() if n))  # fmt: skip

    results = robustness.read_results(os.path.join(model_dir, "robustness"))
    page.heading("Notation robustness")
    if results is None:
        page.note(f"not measured: {robustness_advice(model_dir, config, trains)}")
    else:
        page.note(f"{results['split']} split, {results['num_examples']} examples per task, checkpoint step "
                  f"{results['checkpoint_step']}; drop = original minus notation (for {', '.join(LOWER_IS_BETTER)}: the increase)")  # fmt: skip
        for title, header, rows in robustness_tables(results):
            page.heading(title, 3)
            page.raw(html_table(header, rows))

    page.heading("Configuration")
    page.raw(f"<details><summary>config.gin</summary><pre>{html.escape(config)}</pre></details>")
    page.heading("Library versions")
    page.note("Versions move metric values: RDKit's fingerprints moved rdk_fts on MolT5-large's published predictions "
              "from 0.8125 (RDKit 2023.09) to 0.8071 (RDKit 2026.09).")  # fmt: skip
    recorded = (provenance.history(model_dir) or [None])[-1]
    if recorded:
        page.note(f"the run last started {recorded.get('time')} at revision {recorded.get('revision') or 'n/a'} on "
                  f"{recorded.get('machine')}: {recorded.get('command')}")  # fmt: skip
    else:
        page.note(f"the run recorded no versions ({provenance.FILE}): those below are this report's, not "
                  "necessarily those that computed its metrics")  # fmt: skip
    page.raw(_versions_table({"the run": recorded} if recorded else None))
    return page.write()


def _same_path(first: str, second: str) -> bool:
    """Whether two user paths (local, or gs:// and other `scheme://`) name the same file once normalised."""
    def normal(path: str) -> str:
        if is_remote(path):
            scheme, _, rest = path.partition("://")
            return f"{scheme.lower()}://{posixpath.normpath(rest)}"
        return os.path.realpath(path)  # local only

    return normal(first) == normal(second)


def sweep_report(sweep_dir: str, output_dir: str) -> str:
    """Writes the sweep's page (its table, plots and the versions each point was trained with); returns its path."""
    import csv
    import io

    import tensorflow as tf

    page = Page(output_dir, f"Text+Chem T5 sweep {sweep_dir}")
    with tf.io.gfile.GFile(os.path.join(sweep_dir, "sweep.csv")) as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    header = list(rows[0]) if rows else []
    page.heading("Points")
    page.raw(html_table(header, [[_csv_value(row[h]) for h in header] for row in rows]))
    page.heading("Plots")
    for name in sorted(tf.io.gfile.listdir(sweep_dir)):
        if name.endswith(".png"):
            source, copy = os.path.join(sweep_dir, name), os.path.join(output_dir, name)
            if not _same_path(source, copy):  # copied onto itself (--output_dir=SWEEP_DIR), each PNG was emptied
                tf.io.gfile.copy(source, copy, overwrite=True)
            page.heading(name.removesuffix(".png").replace("_", " "), 3)
            page.figure(copy, name)
    page.heading("Library versions")
    points = [row["point"] for row in rows if row.get("point")]
    histories = {point: provenance.history(os.path.join(sweep_dir, point)) for point in points}
    recorded = {point: entries[-1] for point, entries in histories.items() if entries}
    unrecorded = [point for point in points if point not in recorded]
    if unrecorded:
        page.note(f"{', '.join(unrecorded)} recorded no versions ({provenance.FILE}): what trained them is unknown")
    page.raw(_versions_table(recorded))
    return page.write()


def _csv_value(text: str):
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def _order(task_name: str) -> int:
    task = task_of(task_name)
    return TASKS.index(task) if task else len(TASKS)


@command
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="textchem-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="a textchem-train MODEL_DIR, a textchem-eval output folder (its "
                        "EVAL_OUTPUT_DIR) or a textchem-sweep SWEEP_DIR (local or gs://)")  # fmt: skip
    parser.add_argument("--output_dir", help="default: DIRECTORY/report")
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    args = parse_args(parser, argv)
    if not args.verbose:
        quiet_libraries()
    import tensorflow as tf

    directory = str(absolute(args.directory))  # the page's title names the folder, not `.` or `../run/`
    output_dir = args.output_dir or os.path.join(directory, "report")
    if not tf.io.gfile.exists(directory):
        print(f"textchem-report: {args.directory} does not exist: give a textchem-train MODEL_DIR, a textchem-eval "
              "output folder or a textchem-sweep SWEEP_DIR", file=sys.stderr)  # fmt: skip
        return 2
    if tf.io.gfile.exists(os.path.join(directory, "sweep.csv")):
        path = sweep_report(directory, output_dir)
    elif tf.io.gfile.exists(os.path.join(directory, run_results.RUN_CONFIG_FILE)):
        path = run_report(directory, output_dir)
    else:
        print(f"textchem-report: {args.directory} has neither sweep.csv (a textchem-sweep folder) nor config.gin "
              "(a textchem-train MODEL_DIR)", file=sys.stderr)  # fmt: skip
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
