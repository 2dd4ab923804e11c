"""SeqIO preprocessors (pure `tf.data` maps) for the Text+Chem T5 tasks."""

from __future__ import annotations


def add_prompt(dataset, prompt: str, keep_input_as: str | None = None):
    """`{"input", "target"}` -> `{"inputs": prompt + input, "targets": target}`.

    `keep_input_as` keeps the raw input under that name (retrosynthesis keeps its `product`, which
    the target postprocessor hands to the round-trip metric).
    """
    import tensorflow as tf

    def to_features(example):
        features = {"inputs": tf.strings.join([prompt, example["input"]]), "targets": example["target"]}
        if keep_input_as:
            features[keep_input_as] = example["input"]
        return features

    return dataset.map(to_features, num_parallel_calls=tf.data.AUTOTUNE)


def add_input_domain(dataset, domain: int):
    """`input_domain`: the task's input domain (0 text, 1 chemistry) for every input token.

    Per token, so that SeqIO packing keeps it aligned with `inputs`; e2-CLM models route by it.
    """
    import tensorflow as tf

    def add(example):
        return {**example, "input_domain": tf.fill(tf.shape(example["inputs"]), tf.constant(domain, tf.int32))}

    return dataset.map(add, num_parallel_calls=tf.data.AUTOTUNE)
