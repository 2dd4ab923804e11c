"""The five Text+Chem T5 tasks, their splits, prompts and domains: constants every layer may read.

The bottom of the house (no imports): the data layer builds tasks from it, e2-CLM routes by its
domain ids, inference adds its prompts, so none of them needs to import another for a name.
"""

TASKS = ("forward", "retro", "paragraph2actions", "text2mol", "mol2text")
SPLITS = ("train", "validation", "test")

PROMPTS = {
    "forward": "Predict the product of the following reaction: ",
    "retro": "Predict the reaction that produces the following product: ",
    "paragraph2actions": "Which actions are described in the following paragraph: ",
    "text2mol": "Write in SMILES the described molecule: ",
    "mol2text": "Caption the following SMILES: ",
}
# (input domain, output domain) of each task: selects e2-CLM encoders and the ablation mixtures.
DOMAINS = {
    "forward": ("chemistry", "chemistry"),
    "retro": ("chemistry", "chemistry"),
    "paragraph2actions": ("text", "text"),
    "text2mol": ("text", "chemistry"),
    "mol2text": ("chemistry", "text"),
}
TEXT, CHEMISTRY = 0, 1
DOMAIN_IDS = {"text": TEXT, "chemistry": CHEMISTRY}  # the `input_domain` feature (e2-CLM routing)


def task_of(name: str) -> str | None:
    """Which of the five tasks a SeqIO task name is about (`textchem_demo_mol2text_notation_kekulized` ->
    `mol2text`), None for a task of the user's own."""
    return next((task for task in TASKS if f"_{task}_" in f"_{name}_"), None)


def task_input_domain(task: str) -> int:
    """0 (text) or 1 (chemistry): the input domain of a task ("forward" or its SeqIO name "textchem_forward")."""
    name = task.removeprefix("textchem_").removeprefix("demo_")
    if name not in DOMAINS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(DOMAINS)}")
    return DOMAIN_IDS[DOMAINS[name][0]]

# Published test-set numbers (fractions) that this project could read, by model and task (README, "Released
# checkpoints"); reports put them beside a run's numbers on the same test split.
PAPER_RESULTS = {
    "Text+Chem T5-small-standard": {"paragraph2actions": {"bleu2": 0.929}},
    "Text+Chem T5-base-standard": {"mol2text": {"bleu2": 0.580, "bleu4": 0.490, "rouge1": 0.647, "rouge2": 0.498}},
    "Text+Chem T5-base-augm": {
        "mol2text": {"bleu2": 0.625, "bleu4": 0.542, "rouge1": 0.682, "rouge2": 0.543, "rougeL": 0.622, "meteor": 0.648}
    },
    "MolT5-large": {
        "text2mol": {"exact_match": 0.302, "bleu": 0.854, "morgan_fts": 0.684, "validity": 0.905},
        "mol2text": {"bleu2": 0.594, "bleu4": 0.508, "rouge1": 0.654, "rouge2": 0.510, "rougeL": 0.594, "meteor": 0.614},
    },
}
# The examples the paper's numbers divide by, per task with paper numbers: every row of ChEBI-20's test split
# (README, "Released checkpoints"). None: paragraph2actions' test set was not released; the public files are a
# 100-sentence sample (shared/data/SOURCES.md), 10 of them its test file.
PAPER_TEST_EXAMPLES = {"text2mol": 3_300, "mol2text": 3_300, "paragraph2actions": None}
PAPER_RESULTS_SOURCE = (
    "Christofidellis et al. 2023 (as listed by paperswithcode.com/paper/unifying-molecular-and-textual; small-standard "
    "paragraph-to-actions BLEU-2 from GT4SD/multitask_text_and_chemistry_t5 issue 3) and MolT5 (Edwards et al. 2022, "
    "as listed by paperswithcode.com/paper/translation-between-molecules-and-natural)"
)
