"""A SeqIO encoder-decoder feature converter that keeps the per-token `input_domain` (e2-CLM routing).

SeqIO refuses pass-through features when packing; `input_domain` is a sequence aligned with
`inputs`, so it is declared a task feature and packed exactly like them.
"""

from __future__ import annotations


def domain_feature_converter(pack: bool = True):
    """`seqio.EncDecFeatureConverter` plus `input_domain`; give it the inputs' length in task_feature_lengths."""
    import seqio
    import tensorflow as tf

    spec = seqio.FeatureConverter.FeatureSpec(dtype=tf.int32)

    class EncDecWithDomainFeatureConverter(seqio.EncDecFeatureConverter):
        TASK_FEATURES = {**seqio.EncDecFeatureConverter.TASK_FEATURES, "input_domain": spec}
        MODEL_FEATURES = {**seqio.EncDecFeatureConverter.MODEL_FEATURES, "input_domain": spec}

        def _convert_example(self, features):
            return {**super()._convert_example(features), "input_domain": features["input_domain"]}

        def get_model_feature_lengths(self, task_feature_lengths):
            lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
            lengths["input_domain"] = task_feature_lengths["inputs"]
            return lengths

    return EncDecWithDomainFeatureConverter(pack=pack)
