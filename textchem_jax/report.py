"""`textchem-report DIR`: one self-contained HTML page of a training run (MODEL_DIR) or of a sweep (SWEEP_DIR).

  textchem-report /tmp/textchem_quickstart          # -> /tmp/textchem_quickstart/report/index.html
  textchem-report /tmp/sweep --output_dir=/tmp/sweep_report

A run's page: its configuration, the final metrics of each task (beside the paper's where the task is the
paper's test set), loss and metric curves, molecule grids (RDKit depictions of input, target and predictions
with validity and Morgan Tanimoto to the target) for text2mol, forward and retro, captions beside their
molecules for mol2text, invalid predicted SMILES by RDKit's reason, the notation-robustness tables when
`textchem-robustness` ran, and the library versions that move the numbers. A sweep's page: its table and
plots. Images are PNG files in the output folder, also embedded in the page (it opens anywhere on its own).
"""

from __future__ import annotations

import argparse
import base64
import html
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from textchem_jax import figures, provenance, run_results
from textchem_jax.catalogue import DOMAINS, PAPER_RESULTS, PAPER_RESULTS_SOURCE, PROMPTS, TASKS, task_of
from textchem_jax.cli import command, parse_args, quiet_libraries
from textchem_jax.metrics.tables import LOWER_IS_BETTER, number, robustness_tables
from textchem_jax.paths import absolute, makedirs

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


def _molecule_cell(smiles: str | None, note: str = "") -> Markup:
    png = depiction(smiles)
    text = html.escape(smiles or "")
    picture = _png_tag(png, smiles or "") if png else "<i>not a molecule RDKit reads</i>"
    return Markup(f"{picture}<br><code>{text}</code>{'<br>' + html.escape(note) if note else ''}")


def _similarity(target: str, prediction: str) -> tuple[bool, float | None]:
    """(valid, Morgan radius-2 Tanimoto to the target) with the text2mol metric's own scoring."""
    from textchem_jax.metrics.molecules import score_molecule_pair

    valid, _, fingerprints = score_molecule_pair((target.replace("~", "."), prediction.replace("~", ".")))
    return valid, (fingerprints[2] if fingerprints else None)


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
        for beam in beams:
            valid, tanimoto = _similarity(target, beam)
            note = f"valid, Tanimoto {tanimoto:.2f}" if valid and tanimoto is not None else ("valid" if valid else "invalid")
            cells.append(_molecule_cell(beam, note))
        lines.append(cells)
    width = max((len(r) for r in lines), default=0)
    if task == "mol2text":
        header = ["molecule (input)", "target caption", "predicted caption"]
    else:
        header = ["input", "target", *(["prediction"] if width == 3 else [f"beam {i + 1}" for i in range(width - 2)])]
    return html_table(header, lines, css="grid")


def invalid_breakdown(rows: Sequence[Mapping]) -> dict[str, int]:
    """Top predictions RDKit cannot read, counted by the kind of RDKit's reason; "valid" counts the rest."""
    from textchem_jax.chem import canonicalize_with_reason

    counts: dict[str, int] = {"valid": 0}
    for row in rows:
        canonical, reason = canonicalize_with_reason(_beams(row.get("prediction", ""))[0])
        kind = "valid" if canonical is not None else error_kind(reason)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def paper_columns(task_name: str, split: str | None) -> dict[str, Mapping[str, float]]:
    """{paper model: {metric: value}} for a task that is the paper's own test set (real data, test split)."""
    task = task_of(task_name)
    if task is None or split != "test" or "demo" in task_name:
        return {}
    return {model: results[task] for model, results in PAPER_RESULTS.items() if task in results}


def _versions_table(recorded: Mapping[str, Any] | None = None) -> str:
    """This environment's versions; beside them, those `recorded` (a `provenance` entry of what computed the
    numbers), each that differs marked."""
    now = provenance.versions()
    if not recorded:
        return html_table(["library", "version"], list(now.items()))
    then = recorded.get("versions", {})
    rows = [[name, then.get(name, "not recorded"), version, "" if then.get(name) in (None, version) else "differs"]
            for name, version in now.items()]  # fmt: skip
    return html_table(["library", "recorded with the run", "this report", ""], rows)


LOSS_PANEL = "loss per real target token"
LOSS_NORMALIZING_FACTOR_BINDING = r"[\w./]*\.loss_normalizing_factor"  # T5X's model's (models.EncoderDecoderModel)
# The inference evaluation's split, ours or T5X's (`utils.`: a T5X run's report said "split: ?" and gave a test-split
# run no paper numbers).
INFER_EVAL_SPLIT_BINDING = r"infer_eval/(?:run_config|utils)\.DatasetConfig\.split"


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


def run_report(model_dir: str, output_dir: str) -> str:
    """Writes the run's page; returns its path."""
    import tensorflow as tf

    from textchem_jax import robustness

    page = Page(output_dir, f"Text+Chem T5 run {model_dir}")
    history = run_results.metric_history(model_dir)
    step, final = run_results.final_metrics(history)
    params = run_results.parameter_count(model_dir)
    config_path = os.path.join(model_dir, run_results.RUN_CONFIG_FILE)
    config = ""
    if tf.io.gfile.exists(config_path):
        with tf.io.gfile.GFile(config_path) as f:
            config = f.read()
    split = run_results.config_binding(config, INFER_EVAL_SPLIT_BINDING)
    evaluated = f"final evaluation at step {step}" if step is not None else "no inference evaluation yet"
    page.note(f"{evaluated}; {params:,} parameters; inference evaluation split: {split or '?'}" if params else evaluated)

    page.heading("Final metrics")
    for task_name, metrics in sorted(final.items(), key=lambda item: _order(item[0])):
        papers = paper_columns(task_name, split)
        header = ["metric", f"this run (step {step})", *[f"{m} (paper)" for m in papers]]
        rows = [[name, value, *[papers[m].get(name) for m in papers]] for name, value in metrics.items()]
        page.heading(task_name, 3)
        page.raw(html_table(header, rows))
        if not papers:
            page.note("not the paper's test set (demo corpus, another split or your own task): no paper numbers beside it"
                      if task_of(task_name) else "a task of your own: no paper numbers")  # fmt: skip
    page.note(f"Paper numbers: {PAPER_RESULTS_SOURCE}")

    page.heading("Training curves")
    train = run_results.scalars(os.path.join(model_dir, "train"))
    held_out = run_results.teacher_forced_scalars(model_dir)
    train_loss, held_out_loss = per_token_loss(train, config), per_token_loss(held_out, config)
    curves = {LOSS_PANEL: {"train": train_loss or [], "validation (teacher-forced)": held_out_loss or []},
              "token accuracy": {"train": train.get("accuracy", []), "validation (teacher-forced)": held_out.get("accuracy", [])}}  # fmt: skip
    page.figure(figures.plot_lines(os.path.join(output_dir, "loss_curves"), curves, xlabel="step", columns=2), "loss curves")
    if train_loss is None or held_out_loss is None:
        factor = run_results.config_binding(config, LOSS_NORMALIZING_FACTOR_BINDING)
        page.note(f"T5X's LOSS_NORMALIZING_FACTOR = {factor!r}: its loss is not per real target token, so it is not "
                  "plotted (bind 'NUM_REAL_TARGET_TOKENS', as gin_configs/t5x/textchem_t5x.gin does)")  # fmt: skip
    metric_panels = {}
    for task_name, rows in history.items():
        for name in rows[-1]:
            if name != "step":
                metric_panels[f"{task_of(task_name) or task_name}/{name}"] = {"": [(r["step"], r.get(name)) for r in rows]}
    page.figure(figures.plot_lines(os.path.join(output_dir, "metric_curves"), metric_panels, xlabel="step", columns=4),
                "metric curves")  # fmt: skip
    if history and all(len(rows) < 2 for rows in history.values()):
        page.note("one inference evaluation so far: the metric curves have one point each (set train_lib.train.eval_period "
                  "to evaluate during training)")  # fmt: skip

    page.heading("Predictions")
    breakdown = {}
    for task_name in sorted(final, key=_order):
        task = task_of(task_name)
        rows = run_results.predictions(model_dir, task_name, step)
        if task is None or not rows:
            continue
        page.heading(f"{task_name}: first {min(GRID_ROWS, len(rows))} of {len(rows)} examples", 3)
        if task == "paragraph2actions":
            page.raw(html_table(["paragraph", "target actions", "predicted actions"],
                                [[_input_text(r), _target_text(r), _beams(r["prediction"])[0]] for r in rows[:GRID_ROWS]]))  # fmt: skip
            continue
        page.raw(molecule_grid(task, rows))
        if DOMAINS[task][1] == "chemistry":
            breakdown[task_name] = invalid_breakdown(rows)
    if breakdown:
        page.heading("Invalid SMILES by RDKit's reason (top predictions)")
        kinds = ["valid", *[k for k, _ in ERROR_KINDS], "other"]
        page.raw(html_table(["task", *kinds, "total"], [[t, *[c.get(k, 0) for k in kinds], sum(c.values())] for t, c in breakdown.items()]))

    results = robustness.read_results(os.path.join(model_dir, "robustness"))
    page.heading("Notation robustness")
    if results is None:
        page.note(f"not measured: run textchem-robustness --model_dir={model_dir}")
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
    page.raw(_versions_table(recorded))
    return page.write()


def sweep_report(sweep_dir: str, output_dir: str) -> str:
    """Writes the sweep's page (its table and plots); returns its path."""
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
            copy = os.path.join(output_dir, name)
            tf.io.gfile.copy(os.path.join(sweep_dir, name), copy, overwrite=True)
            page.heading(name.removesuffix(".png").replace("_", " "), 3)
            page.figure(copy, name)
    page.heading("Library versions (this report's)")
    page.raw(_versions_table())
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
    parser.add_argument("directory", help="a textchem-train MODEL_DIR or a textchem-sweep SWEEP_DIR (local or gs://)")
    parser.add_argument("--output_dir", help="default: DIRECTORY/report")
    parser.add_argument("--verbose", action="store_true", help="show library logs")
    args = parse_args(parser, argv)
    if not args.verbose:
        quiet_libraries()
    import tensorflow as tf

    directory = str(absolute(args.directory))  # the page's title names the folder, not `.` or `../run/`
    output_dir = args.output_dir or os.path.join(directory, "report")
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
