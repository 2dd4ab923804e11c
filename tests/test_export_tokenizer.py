"""The tokenizer files of a Hugging Face export: AutoTokenizer on the exported folder reads text into the ids our
vocabulary gives (SMILES with user-defined pieces, text, whitespace, byte fallback), decodes them back, and the
exported model generates the text ours does."""

from __future__ import annotations

import csv
import json
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest
from helpers import predict, tiny_t5

from textchem_jax.data import vocabulary as vocabularies
from textchem_jax.models import hf_convert

pytestmark = pytest.mark.needs_hf

VOCABULARY_MODEL = vocabularies.DEFAULT_VOCABULARY_PATH  # the repository's vocabulary: 43 user-defined SMILES pieces
MAX_DECODE_LENGTH = 12
# Cl, Br, [nH], [O-], [C@@H] at the start, after a space and inside SMILES; prose; runs of spaces, tabs and
# newlines; characters only byte fallback writes (μ, −, CJK); stereo backslashes.
STRINGS = [
    "Cl)cc1", "Cl", "CCl", "Br", "[C@@H]1CC", "O=C([O-])c1ccc[nH]1", "Clc1ccc(Br)cc1[N+](=O)[O-]",
    "C/C=C\\C", "The molecule is a [O-]C(=O)c1ccc[nH]1 with Br.",
    "Predict the product of the following reaction: COc1ccc(C(=O)Cl)cc1.N#Cc1ccc(C(F)(F)F)cc1N.c1ccncc1",
    "  two  spaces ", " leading", "x\ty\nz", "5 μM at 37 °C, pH − 7", "日本語", "",
]  # fmt: skip


def transformers_module():
    return pytest.importorskip("transformers", reason="torch and transformers (the hf extra) are needed")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[pathlib.Path, object, dict]:
    """A tiny v1.1 model over our vocabulary, exported. <pad>, <unk>, the byte pieces, the sentinels and the padding
    rows get all-zero logit weights: their logits are exactly 0, so greedy decoding picks <pad> (the lowest id of a
    tie, in both libraries) rather than any of them, and the text stays words and SMILES."""
    model = tiny_t5("1.1")
    params = jax.tree_util.tree_map(np.asarray, nn.meta.unbox(model.init(jax.random.key(7))))
    kernel = params["decoder"]["logits_dense"]["kernel"].copy()
    proto = hf_convert.read_sentencepiece(VOCABULARY_MODEL)
    kernel[:, [i for i, piece in enumerate(proto.pieces) if piece.type in (piece.CONTROL, piece.UNKNOWN, piece.BYTE)
               and i != 1]] = 0  # fmt: skip
    kernel[:, len(proto.pieces) :] = 0
    params["decoder"]["logits_dense"]["kernel"] = kernel
    directory = tmp_path_factory.mktemp("hf_export")
    hf_convert.save_hf_directory(directory, model.t5_config, params, VOCABULARY_MODEL)
    return directory, model, params


def test_auto_tokenizer_reads_and_writes_text_as_our_vocabulary(exported):
    transformers = transformers_module()
    directory, _, _ = exported
    assert {"tokenizer.json", "tokenizer_config.json", "spiece.model"} <= {p.name for p in directory.iterdir()}
    ours = vocabularies.load_vocabulary(directory / "spiece.model")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == ours.vocab_size - 1  # T5's sentinels, as seqio numbers them
    for text in STRINGS:
        ids = tokenizer(text).input_ids
        assert ids == list(ours.encode(text)) + [1], (text, tokenizer.convert_ids_to_tokens(ids))
        assert tokenizer.decode(ids, skip_special_tokens=True) == ours.decode(ids) == text
    # A batch pads with <pad> after the EOS, as our feature converter does.
    batch = tokenizer(["CCO", "c1ccccc1Cl"], padding=True).input_ids
    assert batch == [list(ours.encode("CCO")) + [1, 0], list(ours.encode("c1ccccc1Cl")) + [1]]


@pytest.mark.needs_data
def test_auto_tokenizer_on_chebi20_differs_only_between_equally_scored_segmentations(exported, data):
    """SentencePiece sums piece scores in float32; where two segmentations of a text score exactly the same, its
    rounding may pick the other one than the tokenizers library (float64). Every other line gets the ids our tasks
    train and evaluate on (`encode_as_tasks`: tf.data's; this compared with Python sentencepiece, which the tasks'
    tf_text op disagreed with on 6% of the texts)."""
    transformers = transformers_module()
    directory, _, _ = exported
    vocabulary = vocabularies.load_vocabulary(directory / "spiece.model")
    processor = vocabulary.tokenizer
    proto = hf_convert.read_sentencepiece(directory / "spiece.model")
    user_defined = {i for i, piece in enumerate(proto.pieces) if piece.type == piece.USER_DEFINED}
    assert len(user_defined) > 40  # Cl, Br, [nH], [O-], ...
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    with open(data / "chebi20" / "test.txt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[:1500]
    texts = [text for row in rows for text in (row["SMILES"], row["description"])]

    def scores(ids):  # what SentencePiece's lattice adds up: a user-defined piece scores -0.1 (see hf_convert)
        return np.array([-0.1 if i in user_defined else processor.GetScore(i) for i in ids], np.float64)

    ties = 0
    for text, ids, expected in zip(texts, tokenizer(texts).input_ids, vocabularies.encode_as_tasks(vocabulary, texts)):
        expected = expected.tolist()
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        if ids[:-1] != expected:
            ours, theirs = scores(expected), scores(ids[:-1])
            # float64 sums of the same real total differ by at most (n - 1) * eps * sum |score| each
            bound = (len(ours) + len(theirs)) * np.finfo(np.float64).eps * (np.abs(ours).sum() + np.abs(theirs).sum())
            assert abs(ours.sum() - theirs.sum()) <= bound, (text, tokenizer.convert_ids_to_tokens(ids))
            ties += 1
    assert ties <= len(texts) // 100  # measured: 70 of ChEBI-20's 13,202 SMILES and descriptions (0.5%)


def test_exported_model_generates_our_text(exported):
    transformers = transformers_module()
    import torch

    directory, model, params = exported
    vocabulary = vocabularies.load_vocabulary(directory / "spiece.model")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    hf_model = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
    texts = ["Cl)cc1", "The molecule is a [O-]C(=O)c1ccc[nH]1 with Br.", "CC(=O)Oc1ccccc1C(=O)O", "5 μM at 37 °C"]
    batch = tokenizer(texts, padding=True, return_tensors="np")
    encoder = np.array(batch.input_ids)
    assert [list(row[row > 0]) for row in encoder] == [list(vocabulary.encode(t)) + [1] for t in texts]
    ours, _ = predict(model, params, {"encoder_input_tokens": encoder.astype(np.int32)}, max_decode_length=MAX_DECODE_LENGTH)
    with torch.no_grad():
        generated = hf_model.generate(input_ids=torch.tensor(encoder), attention_mask=torch.tensor(batch.attention_mask),
                                      num_beams=1, do_sample=False, max_new_tokens=MAX_DECODE_LENGTH)  # fmt: skip
    theirs = tokenizer.batch_decode(generated, skip_special_tokens=True)
    ours_text = [vocabulary.decode(list(row)) for row in np.asarray(ours)[:, 0]]
    assert theirs == ours_text and any(ours_text)


def test_padding_to_max_length_pads_to_the_length_given_and_is_skipped_without_one(exported, tmp_path):
    """tokenizer_config.json said model_max_length=10**9: `padding='max_length'` then allocated 4 GB per text and
    aborted (rc 134 under a 6 GiB address-space limit). Now the key is only written with a length (a run's input
    feature length, an imported folder's own), else transformers' "no limit", which padding skips."""
    transformers = transformers_module()
    directory, model, params = exported
    assert "model_max_length" not in json.loads((directory / "tokenizer_config.json").read_text())
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    assert tokenizer.model_max_length > 10**20  # transformers' VERY_LARGE_INTEGER: padding and truncation skip it
    assert tokenizer(["CCO"], padding="max_length").input_ids == [list(tokenizer("CCO").input_ids)]
    limited = hf_convert.save_hf_directory(tmp_path / "limited", model.t5_config, params, VOCABULARY_MODEL,
                                           model_max_length=16)  # fmt: skip
    tokenizer = transformers.AutoTokenizer.from_pretrained(limited)
    ids = tokenizer(["CCO", "c" * 40], padding="max_length", truncation=True).input_ids
    assert [len(row) for row in ids] == [16, 16] and ids[0][-1] == tokenizer.pad_token_id and ids[1][-1] == 1
