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


def task_input_domain(task: str) -> int:
    """0 (text) or 1 (chemistry): the input domain of a task ("forward" or its SeqIO name "textchem_forward")."""
    name = task.removeprefix("textchem_").removeprefix("demo_")
    if name not in DOMAINS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(DOMAINS)}")
    return DOMAIN_IDS[DOMAINS[name][0]]
