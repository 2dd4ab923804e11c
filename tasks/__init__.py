r"""SeqIO registrations of Text+Chem T5: importing `tasks` registers every task and mixture.

Tasks (data from `TEXTCHEM_DATA_DIR` or the `DATA_DIR` gin macro):
  textchem_forward, textchem_retro, textchem_paragraph2actions, textchem_text2mol, textchem_mol2text
Mixtures:
  textchem_standard  all five, mixed by example count
  textchem_augm      all five; text2mol and mol2text replicated to the size of the largest task (the paper:
                     ChEBI-20 replicated to 2.3M samples each), the others by their own example counts
  textchem_mono      mono-domain tasks only (mol2mol: forward, retro; text2text: paragraph2actions)
  textchem_cross     cross-domain tasks only (text2mol, mol2text)
  textchem_demo      all five on the generated demo corpus (no data needed: the embedded default)
  textchem_demo_{standard,augm,mono,cross}   the four mixtures above on the demo corpus (sweeps' mixture axis)
  textchem_demo_randomized  textchem_demo with 3 seeded randomized SMILES of each chemistry training input
Released checkpoints, scored as their authors did (README, "Released checkpoints"):
  textchem_gt4sd_eval_<task>, mixture textchem_gt4sd_eval: GT4SD's Text+Chem T5 (an unknown piece in a
                     SMILES output reads as `\`, the way GT4SD patches T5's vocabulary)
  textchem_molt5_eval_text2mol, textchem_molt5_eval_mol2text: MolT5 (its models take no prompt)
"""

import seqio

from textchem_jax.catalogue import TASKS
from textchem_jax.data import datasets
from textchem_jax.data.seqio_tasks import augm_rate, demo_directory, rate_by_examples, register_mixture, register_task


def _register_all() -> None:
    if "textchem_standard" in seqio.MixtureRegistry.names():
        return  # imported twice (e.g. by module path and by package): registered already
    for task in TASKS:
        register_task(f"textchem_{task}", task, datasets.data_dir)
        register_task(f"textchem_demo_{task}", task, demo_directory, reactions="uspto_mit")
    everything = [f"textchem_{task}" for task in TASKS]
    register_mixture("textchem_standard", [(t, rate_by_examples()) for t in everything])
    register_mixture("textchem_augm", [(t, augm_rate()) for t in everything])
    register_mixture(
        "textchem_mono", [(f"textchem_{t}", rate_by_examples()) for t in ("forward", "retro", "paragraph2actions")]
    )
    register_mixture("textchem_cross", [(f"textchem_{t}", rate_by_examples()) for t in ("text2mol", "mol2text")])
    register_mixture("textchem_demo", [(f"textchem_demo_{t}", rate_by_examples()) for t in TASKS])
    demo = {
        "standard": [(f"textchem_demo_{t}", rate_by_examples()) for t in TASKS],
        "augm": [(f"textchem_demo_{t}", augm_rate(prefix="textchem_demo_")) for t in TASKS],
        "mono": [(f"textchem_demo_{t}", rate_by_examples()) for t in ("forward", "retro", "paragraph2actions")],
        "cross": [(f"textchem_demo_{t}", rate_by_examples()) for t in ("text2mol", "mol2text")],
    }
    for name, tasks_and_rates in demo.items():
        register_mixture(f"textchem_demo_{name}", tasks_and_rates)
    for task in TASKS:
        register_task(f"textchem_demo_randomized_{task}", task, demo_directory, reactions="uspto_mit", augment=3)
    register_mixture(  # mixed as textchem_demo is, so that only the notation of the inputs differs
        "textchem_demo_randomized",
        [(f"textchem_demo_randomized_{t}", rate_by_examples(like=f"textchem_demo_{t}")) for t in TASKS],
    )
    for task in TASKS:
        register_task(f"textchem_gt4sd_eval_{task}", task, datasets.data_dir, gt4sd_unknown=True)
    register_mixture("textchem_gt4sd_eval", [(f"textchem_gt4sd_eval_{t}", 1.0) for t in TASKS])
    for task in ("text2mol", "mol2text"):
        register_task(f"textchem_molt5_eval_{task}", task, datasets.data_dir, prompt="")


_register_all()
