"""mol2text_metrics: ROUGE equal to rouge-score's, BLEU on word tokens, METEOR with offline WordNet."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from rouge_score import rouge_scorer

from textchem_jax.metrics import captions, mol2text_metrics, word_tokenize
from textchem_jax.metrics import wordnet as wordnet_module

KEYS = {"bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"}


def test_word_tokenizer_is_bert_basic_tokenization():
    assert word_tokenize("The molecule is a (2E)-enoyl-CoA, Café.") == [
        "the", "molecule", "is", "a", "(", "2e", ")", "-", "enoyl", "-", "coa", ",", "cafe", ".",
    ]
    assert len(word_tokenize("word " * 1000)) == 512  # the reference's max_length: it adds no [CLS]/[SEP]


def test_word_tokenizer_splits_off_punctuation_not_symbols_as_bert_does():
    """A regex split off every non-word character: `162℃` gave '162', '℃' where BERT keeps '162℃'."""
    text = "Melts at 162℃ (20 °C); R→S, 水溶性 x\u00a0y a\x00b\ufffdc Ç 5′-phosphate ½ x² a_b"
    assert word_tokenize(text) == [
        "melts", "at", "162℃", "(", "20", "°c", ")", ";", "r→s", ",", "水", "溶", "性", "x", "y", "abc", "c",
        "5", "′", "-", "phosphate", "½", "x²", "a", "_", "b",
    ]  # fmt: skip


@pytest.mark.needs_data
@pytest.mark.needs_hf
def test_word_tokenizer_equals_transformers_basic_tokenizer_on_chebi_descriptions(data):
    """6 of these 6,601 descriptions tokenized differently from BERT's before (`162℃`, `20 °C`, `R→S`)."""
    pytest.importorskip("transformers", reason="transformers (the hf extra) holds the BasicTokenizer to compare with")
    try:
        from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer  # transformers 5
    except ImportError:
        from transformers.models.bert.tokenization_bert import BasicTokenizer  # transformers 4
    bert = BasicTokenizer(do_lower_case=True)
    descriptions = []
    for split in ("test", "validation"):
        with open(data / "chebi20" / f"{split}.txt", encoding="utf-8", newline="") as f:
            descriptions += [row["description"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    assert len(descriptions) == 6_601
    differing = [d for d in descriptions if word_tokenize(d) != bert.tokenize(d)[: captions.MAX_TOKENS]]
    assert differing == []


def test_hand_checked_rouge_and_bleu():
    m = mol2text_metrics(["the cat sat"], ["the cat"])
    assert set(m) == KEYS
    # ROUGE-1: precision 2/2, recall 2/3 -> F = 0.8; ROUGE-2: 1/1 and 1/2 -> 2/3
    assert m["rouge1"] == pytest.approx(0.8) and m["rougeL"] == pytest.approx(0.8)
    assert m["rouge2"] == pytest.approx(2 / 3)
    # BLEU-2: precisions 1 and 1, brevity penalty exp(1 - 3/2)
    assert m["bleu2"] == pytest.approx(np.exp(1 - 1.5))
    perfect = mol2text_metrics(["The molecule is an acid."] * 3, ["The molecule is an acid."] * 3)
    for key in KEYS - {"meteor"}:
        assert perfect[key] == pytest.approx(1.0), key
    assert perfect["meteor"] == pytest.approx(1 - 0.5 * (1 / 6) ** 3)  # 6 tokens, 1 chunk: METEOR's own penalty


@pytest.mark.needs_data
def test_rouge_equals_rouge_score_on_chebi_captions(chebi_test_rows):
    targets = [r["description"] for r in chebi_test_rows[:300]]
    predictions = [r["description"] for r in chebi_test_rows[1:301]]  # other molecules' captions
    m = mol2text_metrics(targets, predictions, with_meteor=False)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    scores = [scorer.score(p, t) for t, p in zip(targets, predictions)]  # argument order as in MolT5
    for key in ("rouge1", "rouge2", "rougeL"):
        assert m[key] == pytest.approx(np.mean([s[key].fmeasure for s in scores]), abs=1e-12)
    assert 0 < m["bleu4"] < m["bleu2"] < 1 and m["meteor"] is None


def test_meteor_uses_wordnet_synonyms():
    # NLTK matches synonyms after stemming, so the reference word must be its own stem ("car").
    base = mol2text_metrics(["the car is in the lab"], ["the banana is in the lab"])
    synonym = mol2text_metrics(["the car is in the lab"], ["the auto is in the lab"])
    assert synonym["meteor"] > base["meteor"]  # "auto" matches "car" only through WordNet synsets
    assert synonym["meteor"] == pytest.approx(1 - 0.5 * (1 / 6) ** 3)  # all 6 matched in one chunk


def test_wordnet_index_parse_is_cached_and_equals_nltks_own(tmp_path, monkeypatch):
    """The index parse a process writes is what NLTK's own reader parses; the next process reads it back, and a
    torn cache file is parsed again and replaced, never trusted."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    wordnet_module.load_wordnet.cache_clear()
    try:
        first = wordnet_module.load_wordnet()
        if first is None:
            pytest.skip(f"no WordNet here: {wordnet_module.INSTALL_HINT}")
        (cache,) = (tmp_path / "textchem_jax").glob("wordnet-index-*.pickle")
        class NltkOwn(WordNetCorpusReader):  # NLTK's parse; only the OMW version map (index.sense) left out
            def map_wn(self, version="wordnet"):
                return None

        monkeypatch.setattr(nltk.data, "path", [*nltk.data.path, first.root.path])  # NLTK opens files on its path
        with pytest.warns(UserWarning, match="multilingual"):
            nltk_own = NltkOwn(first.root.path, None)
        assert first._lemma_pos_offset_map == nltk_own._lemma_pos_offset_map
        assert first.satellite_offsets == nltk_own.satellite_offsets and len(nltk_own.satellite_offsets) > 1000

        wordnet_module.load_wordnet.cache_clear()
        second = wordnet_module.load_wordnet()  # a new reader, from the cache
        assert second is not first and second._lemma_pos_offset_map == nltk_own._lemma_pos_offset_map
        assert [s.name() for s in second.synsets("auto")] == [s.name() for s in nltk_own.synsets("auto")]

        cache.write_bytes(cache.read_bytes()[:1000])  # torn
        wordnet_module.load_wordnet.cache_clear()
        third = wordnet_module.load_wordnet()
        assert third._lemma_pos_offset_map == nltk_own._lemma_pos_offset_map and cache.stat().st_size > 1_000_000
    finally:
        wordnet_module.load_wordnet.cache_clear()


def test_meteor_leaves_nltks_data_path_and_wordnet_lookup_as_they_were(tmp_path, monkeypatch):
    """Our reader's folder was left on `nltk.data.path`: NLTK's own `nltk.corpus.wordnet` and `meteor_score` then
    found that partial copy (no index.sense) and failed with OSError instead of NLTK's LookupError."""
    import nltk

    def nltk_wordnet_lookup():
        try:
            return str(nltk.data.find("corpora/wordnet"))
        except LookupError as error:
            return f"LookupError: {error}"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a fresh copy of Debian's WordNet, as in a new process
    wordnet_module.load_wordnet.cache_clear()
    path_before, lookup_before = list(nltk.data.path), nltk_wordnet_lookup()
    try:
        meteor = mol2text_metrics(["the car is in the lab"], ["the auto is in the lab"])["meteor"]
        if meteor is None:
            pytest.skip(f"no WordNet here: {wordnet_module.INSTALL_HINT}")
        assert nltk.data.path == path_before
        assert nltk_wordnet_lookup() == lookup_before
        reader = wordnet_module.load_wordnet()  # still reads files it had not opened while it was made
        assert len(list(reader.all_synsets("r"))) > 3000 and nltk.data.path == path_before  # 3,621 adverbs in 3.0
    finally:
        wordnet_module.load_wordnet.cache_clear()


def test_meteor_from_several_threads_at_once_equals_meteor_from_one():
    """seqio's evaluator scores each task on its own thread, so mol2text tasks in several notations score METEOR at
    once on one WordNet reader. NLTK reads synsets by seek + readline on shared files: unguarded, threads read each
    other's lines and fail ("'NoneType' object has no attribute 'lemmas'") or score wrong."""
    import concurrent.futures
    import random

    if wordnet_module.load_wordnet() is None:
        pytest.skip(f"no WordNet here: {wordnet_module.INSTALL_HINT}")
    words = (
        "molecule member class benzoic acids aromatic compound carboxylic group preservative antifungal agent organic "
        "belonging having employed fungicides derived conjugate base role metabolite plant human natural product "
        "functionally related tautomer salt ion hydroxy amino"
    ).split()
    rng = random.Random(0)
    references = [[rng.choice(words) for _ in range(30)] for _ in range(40)]
    hypotheses = [[rng.choice(words) for _ in range(30)] for _ in range(40)]

    def cold():  # NLTK keeps each synset it has read: empty that, so that every trial reads the files again
        for cache in wordnet_module.load_wordnet()._synset_offset_cache.values():
            cache.clear()

    cold()
    alone = captions.meteor(references, hypotheses)
    for _ in range(3):
        cold()
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            scores = [f.result() for f in [pool.submit(captions.meteor, references, hypotheses) for _ in range(6)]]
        assert scores == [alone] * 6


def test_meteor_is_none_with_a_warning_when_wordnet_is_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(wordnet_module, "_candidates", lambda: [tmp_path])
    wordnet_module.load_wordnet.cache_clear()
    try:
        with pytest.warns(UserWarning, match="wordnet-base"):
            m = mol2text_metrics(["a b c"], ["a b c"])
        assert m["meteor"] is None and m["rouge1"] == 1.0
    finally:
        wordnet_module.load_wordnet.cache_clear()


def test_a_wrong_wordnet_folder_is_said_not_passed_over(tmp_path, monkeypatch):
    """It was passed over in silence for the next WordNet found (Debian's here): METEOR from another copy."""
    monkeypatch.setenv("TEXTCHEM_WORDNET_DIR", str(tmp_path / "nowhere"))
    wordnet_module.load_wordnet.cache_clear()
    try:
        with pytest.warns(UserWarning) as caught:
            wordnet_module.load_wordnet()
    finally:
        wordnet_module.load_wordnet.cache_clear()
    messages = [str(w.message) for w in caught]
    assert any(f"TEXTCHEM_WORDNET_DIR={tmp_path / 'nowhere'} is not a WordNet dict/ folder (no data.noun" in m for m in messages), messages


@pytest.mark.needs_hf
def test_a_caption_tokenizer_that_cannot_load_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=rf"the caption tokenizer '{tmp_path}/missing' is not a local folder: give"):
        mol2text_metrics(["a b"], ["a b"], tokenizer=str(tmp_path / "missing"))  # was "Repo id must be in the form ..."
    with pytest.raises(ValueError, match=rf"no Hugging Face tokenizer in '{tmp_path}': give a folder that holds one"):
        mol2text_metrics(["a b"], ["a b"], tokenizer=str(tmp_path))
    with pytest.raises(ValueError, match="tokenizer=5: give the path"):
        mol2text_metrics(["a b"], ["a b"], tokenizer=5)


@pytest.mark.needs_hf
def test_word_pieces_are_the_references_unknown_words_kept_512_pieces_at_most(tmp_path):
    """MolT5's script (transformers 4.x: `tokenize(text, truncation=True, max_length=512, padding='max_length')`)
    keeps the first 512 word pieces and removes only [PAD], [CLS] and [SEP]. We removed every special token, [UNK]
    included (a caption whose ℃ was left out scored BLEU-4 1.0 instead of MolT5's 0.85), and transformers 5's
    `tokenize` ignores truncation (a degenerate 800-piece prediction was scored whole)."""
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "molecule", "melts", "at", "162", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(str(tmp_path / "bert"))
    tokenize = captions._hf_tokenize(str(tmp_path / "bert"))
    assert tokenize("The molecule melts at 162 ℃. [CLS] [SEP] [PAD]") == ["the", "molecule", "melts", "at", "162", "[UNK]", "."]
    assert tokenize("the " * 600) == ["the"] * 512
    m = mol2text_metrics(["The molecule melts at 162 ℃."], ["The molecule melts at 162."], tokenizer=str(tmp_path / "bert"),
                         with_meteor=False)  # fmt: skip
    # 7 reference pieces, 6 hypothesis pieces: n-grams matched 6/6, 4/5, 3/4, 2/3; brevity penalty exp(1 - 7/6)
    assert m["bleu4"] == pytest.approx(np.exp(1 - 7 / 6) * (4 / 5 * 3 / 4 * 2 / 3) ** 0.25)


def test_garbage_never_raises():
    m = mol2text_metrics(["The molecule.", "x", "é"], [None, "", b"\xff\xfe"])
    assert set(m) == KEYS and m["rouge1"] == 0.0
