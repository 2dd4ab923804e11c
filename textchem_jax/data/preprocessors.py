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


TOKENIZED_TOGETHER = 256  # examples per tokenizer call


def tokenize(dataset, output_features, copy_pretokenized: bool = True, rows: int = TOKENIZED_TOGETHER):
    """`seqio.preprocessors.tokenize`, `rows` examples per tokenizer call, in order: our vocabulary tokenizes in
    Python (`spm_vocabulary`), and one call per example cost 250 us of overhead for 10 us of sentencepiece. A
    feature that an example lacks, or whose output feature has no vocabulary, passes through as SeqIO's does."""
    import tensorflow as tf

    keys = [key for key, feature in output_features.items() if key in dataset.element_spec and feature.vocabulary]

    def encode(batch):
        features = dict(batch)
        for key in keys:
            if copy_pretokenized:
                features[f"{key}_pretokenized"] = batch[key]
            features[key] = output_features[key].vocabulary.encode_tf(batch[key])
        return features

    def dense(example):  # an unbatched row of a RaggedTensor is a RaggedTensor of rank 1: the ids as a Tensor
        return {key: value.to_tensor() if isinstance(value, tf.RaggedTensor) else value for key, value in example.items()}

    batches = dataset.batch(rows).map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.unbatch().map(dense, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
