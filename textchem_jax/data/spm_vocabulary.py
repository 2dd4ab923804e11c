"""SeqIO's SentencePiece vocabulary, tokenizing inside tf.data with the sentencepiece library itself.

tf_text's SentencePiece op (what `seqio.SentencePieceVocabulary.encode_tf` runs) breaks ties between equally scored
segmentations otherwise than sentencepiece does ('CC CC C' where sentencepiece, Python `encode` and Hugging Face's
T5 tokenizers give 'C CC CC'): 112 of 2,000 ChEBI-20 validation texts got other ids. The paper's models were
trained on Hugging Face's tokenization, so a released checkpoint read 6% of its inputs in segmentations it never
saw, and a run of ours exported to Hugging Face was fed others than it trained on. Here training, evaluation,
inference and Python `encode` agree, and an export's tokenizer.json with them but where float rounding picks between
two segmentations of exactly equal score (70 of 13,202 ChEBI-20 texts). SeqIO caches written before keep the op's.
"""

from __future__ import annotations

import numpy as np
import seqio
import tensorflow as tf


class SentencePieceVocabulary(seqio.SentencePieceVocabulary):
    """`encode_tf` runs the same `sentencepiece` call as `encode` (a tf.numpy_function): a string gives its ids, a
    vector of strings a RaggedTensor of them, as tf_text's op does; other ranks are refused here, not shapes
    gone wrong later."""

    @classmethod
    def like(cls, vocabulary: seqio.SentencePieceVocabulary) -> SentencePieceVocabulary:
        """Ours, with every setting of seqio's `vocabulary` (file, extra ids, normalizer overrides, id order)."""
        ours = cls.__new__(cls)
        ours.__setstate__(vocabulary.__getstate__())
        return ours

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        processor = self.tokenizer  # loaded here, once: not in the tf.data threads

        def encode(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pieces = [processor.EncodeAsIds(text.decode("utf-8")) for text in np.ravel(texts)]
            values = np.fromiter((i for ids in pieces for i in ids), np.int32)
            return values, np.asarray([len(ids) for ids in pieces], np.int64)

        s = tf.convert_to_tensor(s, tf.string)
        if s.shape.rank not in (0, 1):
            raise ValueError(f"encode_tf takes a string or a vector of strings, not a tensor of shape {s.shape}: "
                             "give it a tensor of known rank 0 or 1 (tf.ensure_shape)")  # fmt: skip
        values, lengths = tf.numpy_function(encode, [s], (tf.int32, tf.int64), stateful=False)
        values.set_shape([None])
        if s.shape.rank == 0:
            return values
        lengths.set_shape([None])
        return tf.RaggedTensor.from_row_lengths(values, lengths, validate=False)
