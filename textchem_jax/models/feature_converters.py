"""SeqIO feature converters of our model families (the `FEATURE_CONVERTER_CLS` of T5X's models).

T5 reads SeqIO's standard encoder-decoder features. e2-CLM's routed variants also read the per-token
`input_domain` our tasks' preprocessors add beside their output features (so any SeqIO consumer, T5X
included, evaluates the tasks with the standard converter): SeqIO refuses pass-through features when
packing, so their converter declares it a task feature aligned with `inputs`, as long as the inputs.

Both skip SeqIO's length assertions (`apply_length_check=False`): the task datasets they convert are trimmed
to the feature lengths already (SeqIO's `trim_output_features`, which our evaluator counts and reports), and
packing or padding makes every row exactly as long; building the assertions' graphs took 4.7 s of a command's
start for a training and a validation dataset of the demo mixture, on a busy 2-core CPU.
"""

from __future__ import annotations


def encoder_decoder_feature_converter(pack: bool = True):
    """SeqIO's `EncDecFeatureConverter`: inputs and targets, packed or padded (what T5X uses)."""
    import seqio

    return seqio.EncDecFeatureConverter(pack=pack, apply_length_check=False)


def domain_feature_converter(pack: bool = True):
    """`seqio.EncDecFeatureConverter` plus the per-token `input_domain` (its length is the inputs')."""
    import seqio
    import tensorflow as tf

    spec = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)

    class EncDecWithDomainFeatureConverter(seqio.EncDecFeatureConverter):
        """Packing drops a feature's zeros as padding, and text is domain 0: a text example's domains vanished and
        the next example's shifted into its tokens (31.9% of the tokens of textchem_augm's validation split routed
        to the wrong encoder). So the domain travels as domain + 1 through packing, and comes back as itself."""

        TASK_FEATURES = {**seqio.EncDecFeatureConverter.TASK_FEATURES, "input_domain": spec}
        MODEL_FEATURES = {**seqio.EncDecFeatureConverter.MODEL_FEATURES, "input_domain": spec}

        def _convert_example(self, features):
            domain = tf.maximum(features["input_domain"] - 1, 0)  # padding (0) reads as text; attention masks it
            return {**super()._convert_example(features), "input_domain": domain}

        def __call__(self, ds, task_feature_lengths):
            if "input_domain" in ds.element_spec:  # else SeqIO's check names the missing feature (run_config says how)
                ds = ds.map(lambda example: {**example, "input_domain": example["input_domain"] + 1},
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)  # fmt: skip
            return super().__call__(ds, {**task_feature_lengths, "input_domain": task_feature_lengths["inputs"]})

        def get_model_feature_lengths(self, task_feature_lengths):
            lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
            lengths["input_domain"] = task_feature_lengths["inputs"]
            return lengths

    return EncDecWithDomainFeatureConverter(pack=pack, apply_length_check=False)


def convert_in_parallel(converter, dataset, task_feature_lengths, chunk_size: int = 1024):
    """`converter(dataset, task_feature_lengths)` with its packing spread over the host's cores.

    SeqIO packs a dataset as one stream, on one core: too slow to feed an accelerator. Here every `chunk_size`
    consecutive examples are packed on their own, chunks at once on all cores (a parallel interleave), and their
    rows follow in the chunks' order: a chunk packs into at most `chunk_size` rows, so blocks of that many hold a
    whole chunk, and the order is the same on any number of cores. Only a chunk's last row may be less full than
    in one stream (about one row in `chunk_size` / examples per row). Nested datasets, not a stateful op: the
    iterator can still be saved with a checkpoint.
    """
    import tensorflow as tf

    def pack(window):  # {feature: dataset of its values in the chunk}
        return converter(tf.data.Dataset.zip(window), task_feature_lengths)

    return dataset.window(chunk_size).interleave(
        pack, cycle_length=tf.data.AUTOTUNE, block_length=chunk_size, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )  # fmt: skip
