"""Vocabulary: every real string round-trips without <unk>, SMILES are shorter than with plain SentencePiece.

Trained on the validation/train splits of the shared data, checked on every split that reads quickly.
`pytest -s` prints tokens per SMILES (ours vs plain), the counts checked and the timings.
"""

from __future__ import annotations

import csv
import json
import pathlib
import random
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import sentencepiece as spm

from textchem_jax import vocab as vocab_cli
from textchem_jax.chem import precursors_and_products
from textchem_jax.data import datasets, sources
from textchem_jax.data import vocabulary as V

VOCAB_SIZE = 1500
COMPARED = pytest.mark.xdist_group("vocabulary")  # tests of `comparison`: one worker trains both vocabularies once
TRICKY = [
    "C/C=C\\C",
    "F/C=C\\1/CCCC1",
    "[Na+]~[OH-]",
    "stirred at −78 °C, then 50 μL at 25 ℃ (δ 7.2)",
    "  leading and  double  spaces, trailing tab\t",
    "line\nbreak",
    "",
    "unseen characters ✓ 漢字 🧪",
]


def _chebi(data, split: str) -> list[dict[str, str]]:
    with open(data / "chebi20" / f"{split}.txt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def training_texts(data) -> list[str]:
    """What the model reads and writes (prompt + input, target) on the validation splits: ChEBI-20 both
    directions, USPTO-50K retrosynthesis (1,000 reactions, to keep training short), paragraph2actions,
    plus the GT4SD rows."""
    texts = []
    for task in ("text2mol", "mol2text", "paragraph2actions"):
        texts += vocab_cli.task_texts(task, datasets.task_pairs(task, "validation", str(data)))
    texts += vocab_cli.task_texts("retro", datasets.task_pairs("retro", "validation", str(data))[:1000])
    texts += [t for r in sources.read_jsonl_pairs(str(data / "gt4sd_sample" / "valid.jsonl")) for t in (r.source, r.target)]
    return texts


@pytest.fixture(scope="module")
def test_smiles(data) -> list[str]:
    """Held out: ChEBI-20 test SMILES with the stored doubled backslashes undone."""
    return [row["SMILES"].replace("\\\\", "\\") for row in _chebi(data, "test")]


@pytest.fixture(scope="module")
def comparison(training_texts, test_smiles, tmp_path_factory) -> V.Comparison:
    start = time.perf_counter()
    result = V.compare_with_plain(training_texts, test_smiles, tmp_path_factory.mktemp("vocab"), vocab_size=VOCAB_SIZE)
    print(f"\n[vocab] trained ours + plain ({VOCAB_SIZE} pieces, {len(training_texts)} texts) in "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return result


@pytest.fixture(scope="module")
def real_strings(data) -> dict[str, list[str]]:
    """Every string of the files that read quickly, plus a 5,000-line sample of USPTO-MIT test."""
    groups: dict[str, list[str]] = {"chebi20 SMILES": [], "chebi20 SMILES as stored": [], "chebi20 descriptions": []}
    for split in ("test", "validation"):
        for row in _chebi(data, split):
            groups["chebi20 SMILES"].append(row["SMILES"].replace("\\\\", "\\"))
            groups["chebi20 SMILES as stored"].append(row["SMILES"])
            groups["chebi20 descriptions"].append(row["description"])
    groups["uspto50k reactions"] = []
    for split in ("test", "valid"):
        with open(data / "uspto50k" / f"{split}.csv", encoding="utf-8", newline="") as f:
            groups["uspto50k reactions"] += [row["rxn_smiles"] for row in csv.DictReader(f)]
    groups["paragraph2actions"] = []
    for path in sorted((data / "paragraph2actions").glob("*.txt")):
        groups["paragraph2actions"] += path.read_text(encoding="utf-8").splitlines()
    groups["gt4sd jsonl"] = []
    for path in sorted((data / "gt4sd_sample").glob("*.jsonl")):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        groups["gt4sd jsonl"] += [row[key] for row in rows for key in ("source", "target")]
    lines = []
    for split in ("test", "valid"):
        with sources.open_text(str(data / "uspto_mit" / f"{split}.txt.tar.gz")) as f:
            lines += [line.rstrip("\n") for line in f]
    groups["uspto_mit lines (all, as stored)"] = lines
    records = datasets.read_dataset("uspto_mit", "test", str(data))
    groups["uspto_mit test in model format"] = [text for r in records for text in (r.precursors, r.product)]
    groups["tricky strings"] = TRICKY
    return groups


@pytest.mark.slow
@pytest.mark.needs_data
@COMPARED
def test_every_real_string_round_trips_without_unk(comparison, real_strings):
    vocabulary = V.load_vocabulary(comparison.ours_path)
    joined = "".join(s for strings in real_strings.values() for s in strings)
    for character in ("\\", "~", "°", "μ", "−", "℃", "\t"):
        assert character in joined  # the hard cases really are among the strings checked
    total = 0
    for name, strings in real_strings.items():
        check = V.check_round_trip(vocabulary, strings)
        print(f"[vocab] {name}: {check.checked} strings, {len(check.mismatched)} changed, {len(check.with_unk)} <unk>")
        assert not check.mismatched, f"{name}: {check.mismatched[:3]}"
        assert not check.with_unk, f"{name}: {check.with_unk[:3]}"
        total += check.checked
    print(f"[vocab] {total} strings round-trip exactly with no <unk>")


@pytest.mark.slow
@pytest.mark.needs_data
@COMPARED
def test_plain_sentencepiece_does_not_round_trip(comparison, real_strings):
    """Why we do not use SentencePiece's defaults: NFKC rewrites `℃`, rare characters become <unk>."""
    failures = 0
    for name, strings in real_strings.items():
        check = V.check_round_trip(comparison.plain_path, strings)
        failures += len(check.mismatched)
    print(f"[vocab] plain SentencePiece changes {failures} of the same strings")
    assert failures > 0


@pytest.mark.needs_data
@COMPARED
def test_fewer_tokens_per_smiles_than_plain_sentencepiece(comparison, data):
    print(f"\n[vocab] tokens per ChEBI-20 test SMILES: ours {comparison.ours:.2f}, plain {comparison.plain:.2f}")
    assert comparison.ours < comparison.plain
    with open(data / "uspto50k" / "test.csv", encoding="utf-8", newline="") as f:
        reactions = [row["rxn_smiles"] for row in csv.DictReader(f)][:500]
    held_out = {
        "USPTO-50K test precursors and products (unmapped)": [s for r in reactions for s in precursors_and_products(r)],
        "USPTO-50K test reactions as stored (atom-mapped)": reactions,
        "ChEBI-20 test descriptions": [row["description"] for row in _chebi(data, "test")],
    }
    for name, strings in held_out.items():
        ours, plain = (V.tokens_per_string(path, strings) for path in (comparison.ours_path, comparison.plain_path))
        print(f"[vocab] tokens per string, {name}: ours {ours:.2f}, plain {plain:.2f}")


@pytest.mark.needs_data
@COMPARED
def test_smiles_pieces_never_cut_an_atom(comparison, test_smiles):
    """Each piece lies inside one atom token or covers whole atom tokens (`Cl`, `[C@@H]` are never split
    across pieces that also hold a neighbour)."""
    processor = spm.SentencePieceProcessor(model_file=comparison.ours_path)
    for smiles in test_smiles:
        bounds, position = {0}, 0
        for token in V.SMILES_TOKEN.findall(smiles):
            position += len(token)
            bounds.add(position)
        for piece in processor.encode(smiles, out_type="proto").pieces:
            begin, end = piece.begin, piece.end
            crosses = any(begin < b < end for b in bounds)
            assert not crosses or (begin in bounds and end in bounds), (smiles, piece.piece)
    for symbol in ("Cl", "Br", "[C@@H]", "[nH]", "[O-]", "[N+]"):
        assert processor.encode(symbol, out_type=str)[-1] == symbol


@pytest.mark.needs_data
@COMPARED
def test_load_by_path_with_seqio(comparison, test_smiles):
    import seqio

    vocabulary = seqio.SentencePieceVocabulary(comparison.ours_path, extra_ids=V.T5_EXTRA_IDS)
    ours = V.load_vocabulary(comparison.ours_path)
    with_backslash = [s for s in test_smiles if "\\" in s][:50]
    assert with_backslash
    for smiles in with_backslash:
        ids = vocabulary.encode(smiles)
        assert vocabulary.decode(ids) == smiles
        assert ours.encode(smiles) == ids
        assert vocabulary.unk_id not in ids
    assert vocabulary.vocab_size == VOCAB_SIZE + V.T5_EXTRA_IDS
    assert (vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id) == (0, 1, 2)


def test_clear_errors_for_missing_or_bad_model(tmp_path):
    missing = tmp_path / "nope" / "spiece.model"  # what a moved textchem-convert folder's model.gin names
    with pytest.raises(FileNotFoundError, match=f"{missing} \\(a textchem-convert folder moved\\? bind --gin.VOCABULARY_PATH="):
        V.load_vocabulary(missing)
    bad = tmp_path / "notes.model"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="is not a SentencePiece model"):
        V.load_vocabulary(bad)
    with pytest.raises(ValueError, match="no non-empty training texts"):
        V.train_vocabulary(["", ""], tmp_path / "empty")


def test_training_is_deterministic(tmp_path):
    texts = vocab_cli.mixture_texts("textchem_demo")
    shuffled = list(texts)
    random.Random(0).shuffle(shuffled)
    first = V.train_vocabulary(texts, tmp_path / "a", vocab_size=600)
    second = V.train_vocabulary(shuffled, tmp_path / "b", vocab_size=600)
    assert pathlib.Path(first).read_bytes() == pathlib.Path(second).read_bytes()


def test_identity_normalization_keeps_tensorflow_text_quiet(tmp_path):
    """Our models normalize nothing (NFKC would rewrite `μ`, `°`, `−`) yet carry a charsmap, since
    tensorflow-text's SentencePiece logs a line for an empty one every time a tokenizer kernel starts."""
    trained = V.train_vocabulary(vocab_cli.mixture_texts("textchem_demo"), tmp_path / "v", vocab_size=600)
    for path in (trained, str(V.DEFAULT_VOCABULARY_PATH)):
        processor = spm.SentencePieceProcessor(model_file=path)
        text = "ﬁ café 5 µm at 25 °C, −OH  x\ty ＡＢＣ"
        assert processor.decode(processor.encode(text)) == text  # nothing normalized (NFKC maps ﬁ, µ, Ａ)
        script = ("import tensorflow_text as t; import sys; "
                  f"print(t.SentencepieceTokenizer(model=open({path!r}, 'rb').read()).tokenize(['CCO']).to_list())")  # fmt: skip
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and "[[" in result.stdout, result.stderr[-2000:]
        assert "precompiled_charsmap" not in result.stderr


def test_default_vocabulary_round_trips_backslash_smiles():
    assert V.DEFAULT_VOCABULARY_PATH.is_file() and V.DEFAULT_VOCABULARY_PATH.stat().st_size < 500_000
    vocabulary = V.default_vocabulary()
    for smiles in ("C/C=C\\C", "CC\\C=C\\1/CCCC1", "O=C(O)/C=C\\c1ccccc1", "C[C@@H](N)C(=O)[O-]~[Na+]", *TRICKY):
        ids = vocabulary.encode(smiles)
        assert vocabulary.decode(ids) == smiles
        assert vocabulary.unk_id not in ids
    assert vocabulary.tokenizer.piece_to_id("\\") != vocabulary.unk_id  # a real piece, not bytes
    assert vocabulary.vocab_size == 1000 + V.T5_EXTRA_IDS


def test_cli_trains_from_files(tmp_path, capsys):
    lines = tmp_path / "texts.txt"
    lines.write_text("CC/C=C\\CC\nThe molecule is a thing at 25 °C.\n", encoding="utf-8")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"source": "Caption the following SMILES: C~[Na+]", "target": "sodium μ"}) + "\n")
    table = tmp_path / "chebi.tsv"
    table.write_text("CID\tSMILES\tdescription\n1\tC/C=C\\\\C\tbutene\n", encoding="utf-8")
    assert V.read_texts(table) == ["1", "C/C=C\\C", "butene"]
    for plain in (lines, pairs):  # saved on Windows: a byte-order mark (json.loads refused it) and CRLF line ends
        windows = tmp_path / f"windows{plain.suffix}"
        windows.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"\n", b"\r\n"))
        assert V.read_texts(windows) == V.read_texts(plain)
    prefix = tmp_path / "out" / "v"
    inputs = [str(lines), str(pairs), str(table)]
    code = vocab_cli.main(["--input", *inputs, "--mixture", "textchem_demo", "--output_prefix", str(prefix), "--vocab_size", "700"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"{prefix}.model" in printed and "0 with <unk>" in printed and "700 pieces" in printed
    assert V.load_vocabulary(f"{prefix}.model").decode(V.load_vocabulary(f"{prefix}.model").encode("C\\C")) == "C\\C"


def test_cli_says_what_it_reads_and_trains_on(tmp_path, capsys, monkeypatch):
    """`--mixture=textchem_standard --split=validation` printed nothing for 3.5 minutes, then 4 lines."""
    (tmp_path / "a.txt").write_text("CCO\nc1ccccc1\nThe molecule is an alcohol.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("CC(=O)O\n", encoding="utf-8")
    inputs = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    monkeypatch.setattr(vocab_cli, "PROGRESS_PERIOD", 0.0, raising=False)  # a line per file and task
    code = vocab_cli.main(["--input", *inputs, "--mixture", "textchem_demo", "--output_prefix", str(tmp_path / "v"), "--vocab_size", "700"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    lines = [line for line in printed.splitlines() if ": still working after " not in line]  # the heartbeat's, at 0 s
    demo_tasks = "textchem_demo_forward, textchem_demo_mol2text, textchem_demo_paragraph2actions, textchem_demo_retro, textchem_demo_text2mol"
    assert [re.sub(r" in \d+ s\)$", " in N s)", line) for line in lines[:4]] == [  # seconds: the machine's
        "reading 2 --input file(s) ...", f"  {inputs[0]}: 3 texts (1/2 files, 3 texts in N s)",
        f"  {inputs[1]}: 1 texts (2/2 files, 4 texts in N s)",
        f"reading the train split of textchem_demo: 5 task(s) ({demo_tasks}) ..."]  # fmt: skip
    for done, line in enumerate(lines[4:9], start=1):
        assert re.fullmatch(rf"  textchem_demo_\w+: [\d,]+ texts \({done}/5 tasks, [\d,]+ texts in \d+ s\)", line), line
    total = len(vocab_cli.mixture_texts("textchem_demo")) + 4
    assert lines[9] == f"training SentencePiece on {total:,} texts (--vocab_size=700) ..."
    assert lines[10].startswith(f"Wrote {tmp_path / 'v'}.model")
    assert re.fullmatch(rf"checking the round trip: {total:,}/{total:,} texts in [\d.]+ s \(.*\)", lines[12]), lines[12]

    monkeypatch.setattr(vocab_cli, "PROGRESS_PERIOD", 30.0)  # at most a line every 30 s, and the last one
    vocab_cli._read_texts([], "textchem_demo", "train")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("  textchem_demo_text2mol: ") and "(5/5 tasks, " in lines[1], lines


def test_texts_come_from_csv_and_archives_and_bad_lines_are_named(tmp_path):
    """A .csv was read as raw lines (its header and `class,id,` prefixes trained the vocabulary); a .tar.gz or a
    Latin-1 file ended in "'utf-8' codec can't decode byte 0x8b in position 1", naming no file."""
    import tarfile

    (tmp_path / "u50k.csv").write_text('class,id,rxn_smiles\n1,US1,"CCO>>CC=O"\n', encoding="utf-8")
    assert V.read_texts(tmp_path / "u50k.csv") == ["1", "US1", "CCO>>CC=O"]
    (tmp_path / "mit.txt").write_text("CCO>>CC=O 1-2-1.0\nCCN>>CC=N\n")
    with tarfile.open(tmp_path / "mit.txt.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "mit.txt", arcname="mit.txt")
    assert V.read_texts(tmp_path / "mit.txt.tar.gz") == V.read_texts(tmp_path / "mit.txt") == ["CCO>>CC=O 1-2-1.0", "CCN>>CC=N"]
    (tmp_path / "latin1.txt").write_bytes("fine\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'latin1.txt'}:2: not UTF-8 text \(byte 0xe9"):
        V.read_texts(tmp_path / "latin1.txt")
    (tmp_path / "rows.jsonl").write_text('{"source": "a", "target": "b"}\n{"source": \n')
    with pytest.raises(ValueError, match=rf"{tmp_path / 'rows.jsonl'}:2: not JSON"):
        V.read_texts(tmp_path / "rows.jsonl")


def test_numbers_in_prose_are_not_counted_as_smiles():
    assert V.smiles_in_texts(["Yield 52.63 % (10 mmol), dr 95:5, of c1ccccc1O and [Na+]~[OH-] in water."]) == [
        "c1ccccc1O", "[Na+]~[OH-]"]  # fmt: skip


def test_every_input_file_is_read_however_the_flag_is_given_and_jsonl_inputs_count(tmp_path, capsys):
    """`--input A --input B` trained on B alone, and textchem-infer's .jsonl rows gave only their targets."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"input": s, "target": f"t {s}"}) + "\n" for s in ("CCO", "c1ccccc1")))
    assert V.read_texts(rows) == ["CCO", "t CCO", "c1ccccc1", "t c1ccccc1"]
    (tmp_path / "more.txt").write_text("CC(=O)O\n")
    prefix = str(tmp_path / "v")
    assert vocab_cli.main(["--input", str(rows), "--input", str(tmp_path / "more.txt"), "--output_prefix", prefix,
                           "--vocab_size=300", "--soft_vocab_limit"]) == 0  # fmt: skip
    assert "reading 2 --input file(s)" in capsys.readouterr().out
    (tmp_path / "other.jsonl").write_text(json.dumps({"smiles": "CCO"}) + "\n")
    assert vocab_cli.main(["--input", str(tmp_path / "other.jsonl"), "--output_prefix", prefix, "--overwrite"]) == 2
    assert "a .jsonl row's source, input, inputs, target, targets strings are read" in capsys.readouterr().err


def test_cli_errors_and_console_entry(tmp_path, capsys):
    with pytest.raises(SystemExit):
        vocab_cli.main(["--output_prefix", str(tmp_path / "v")])  # no texts
    assert "no texts" in capsys.readouterr().err
    assert vocab_cli.main(["--input", str(tmp_path / "missing.txt"), "--output_prefix", str(tmp_path / "v")]) == 2
    (tmp_path / "texts.txt").write_text("CCO\nc1ccccc1\nThe molecule is an alcohol.\n", encoding="utf-8")
    flags = ["--input", str(tmp_path / "texts.txt"), "--output_prefix", str(tmp_path / "v")]
    # SentencePiece's own words sent users to its --character_coverage and to --soft_vocab_limit, neither of use
    assert vocab_cli.main([*flags, "--vocab_size=30"]) == 2
    error = capsys.readouterr().err
    # (it called all 377 required pieces "distinct characters": byte pieces and symbols are among them)
    distinct = len(set("CCO\nc1ccccc1\nThe molecule is an alcohol.".replace("\n", "")))
    assert re.search(rf"--vocab_size=30 is below the \d+ pieces every vocabulary of these texts holds \(their {distinct} "
                     r"distinct characters, the 256 byte pieces.*give a --vocab_size of at least \d+", error)  # fmt: skip
    assert "character_coverage" not in error and "--soft_vocab_limit" not in error
    assert vocab_cli.main([*flags, "--vocab_size=100000"]) == 2  # SentencePiece's C++ place and words were the error
    assert re.fullmatch(r"textchem-vocab: --vocab_size=100000 is more pieces than these 3 texts make \(at most (\d+)\): "
                        r"give --vocab_size=\1 or less, or --soft_vocab_limit to allow fewer\n", capsys.readouterr().err)  # fmt: skip
    (tmp_path / "empty.txt").write_text("")
    assert vocab_cli.main(["--input", str(tmp_path / "empty.txt"), "--output_prefix", str(tmp_path / "v")]) == 2
    assert capsys.readouterr().err.startswith(f"textchem-vocab: no texts in {tmp_path / 'empty.txt'} (")
    with pytest.raises(SystemExit):
        vocab_cli.main([*flags[:2], "--output_prefix", f"{tmp_path}/"])
    assert "is a folder: name the files" in capsys.readouterr().err
    assert not list(tmp_path.glob(".model"))  # a prefix ending in / wrote a hidden .model
    command = [sys.executable, "-m", "textchem_jax.vocab", *flags, "--vocab_size=400", "--soft_vocab_limit"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "3/3 exact" in result.stdout
    assert result.stderr == ""  # the console is ours: TensorFlow's and CUDA's start-up lines only with --verbose


def test_encode_as_tasks_takes_any_seqio_vocabulary_and_an_empty_batch():
    """SentencePiece's TF op reads a batch; seqio's other vocabularies' ops (ByteVocabulary) read one string, so
    they are encoded one at a time, as SeqIO's tokenize preprocessor calls them."""
    import seqio

    by_string = V.encode_as_tasks(seqio.ByteVocabulary(), ["ab", "c", ""])
    assert [ids.tolist() for ids in by_string] == [[100, 101], [102], []]
    assert V.encode_as_tasks(V.default_vocabulary(), []) == []
    assert [ids.tolist() for ids in V.encode_as_tasks(V.default_vocabulary(), ["CCO", ""])] == [
        V.default_vocabulary().encode_tf("CCO").numpy().tolist(), []]


def test_existing_model_is_refused_before_training_unless_overwrite(tmp_path, capsys):
    """textchem-vocab replaced an existing .model (a run's spiece.model, and PREFIX_plain.model with
    --compare_plain) without a word, status 0; a prefix under a file failed after training with a bare
    "[Errno 17] File exists"."""
    (tmp_path / "texts.txt").write_text("CCO is ethanol\nc1ccccc1 is benzene\nCC(=O)O acetic acid\n", encoding="utf-8")
    flags = ["--input", str(tmp_path / "texts.txt"), "--vocab_size=400", "--soft_vocab_limit"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "spiece.model").write_bytes(b"the run's vocabulary")
    assert vocab_cli.main([*flags, f"--output_prefix={run / 'spiece'}"]) == 2
    captured = capsys.readouterr()
    assert f"{run / 'spiece.model'} already exists" in captured.err and "--overwrite" in captured.err
    assert "training" not in captured.out and (run / "spiece.model").read_bytes() == b"the run's vocabulary"
    (tmp_path / "v_plain.model").write_bytes(b"kept")
    assert vocab_cli.main([*flags, f"--output_prefix={tmp_path / 'v'}", "--compare_plain"]) == 2
    assert f"{tmp_path / 'v_plain.model'} already exists" in capsys.readouterr().err
    assert not (tmp_path / "v.model").exists()
    assert vocab_cli.main([*flags, f"--output_prefix={tmp_path / 'v'}", "--compare_plain", "--overwrite"]) == 0
    assert (tmp_path / "v_plain.model").read_bytes() != b"kept"
    capsys.readouterr()
    assert vocab_cli.main([*flags, f"--output_prefix={tmp_path / 'texts.txt' / 'v'}"]) == 2
    captured = capsys.readouterr()
    assert f"{tmp_path / 'texts.txt'} is a file, not a folder" in captured.err and "training" not in captured.out


def test_the_least_size_said_trains_and_plain_takes_the_most_it_can(tmp_path, capsys):
    """It said "give a --vocab_size above 362" though 362 trained; --compare_plain passed SentencePiece's raw INTERNAL
    error through ("Please set it to a value <= 984") where plain SentencePiece makes fewer pieces than ours."""
    (tmp_path / "texts.txt").write_text("CCO is ethanol\nc1ccccc1 is benzene\nCC(=O)O acetic acid\n", encoding="utf-8")
    flags = ["--input", str(tmp_path / "texts.txt"), f"--output_prefix={tmp_path / 'v'}", "--overwrite"]
    assert vocab_cli.main([*flags, "--vocab_size=30"]) == 2
    least = int(re.search(r"give a --vocab_size of at least (\d+)", capsys.readouterr().err)[1])
    assert vocab_cli.main([*flags, f"--vocab_size={least}"]) in (0, 2)  # 2: more than the texts make
    assert "is below the" not in capsys.readouterr().err
    assert vocab_cli.main([*flags, "--vocab_size=100000"]) == 2
    most = int(re.search(r"at most (\d+)", capsys.readouterr().err)[1])
    assert vocab_cli.main([*flags, f"--vocab_size={most}", "--compare_plain"]) == 0
    printed = capsys.readouterr().out
    said = re.search(rf"plain SentencePiece: these texts make at most (\d+) of its pieces .*, so it is trained with "
                     rf"\1, not {most}", printed)  # fmt: skip
    assert said and "INTERNAL" not in printed, printed
    assert spm.SentencePieceProcessor(model_file=str(tmp_path / "v_plain.model")).GetPieceSize() == int(said[1])


def test_texts_longer_than_sentencepieces_limit_are_trained_on(tmp_path):
    """Texts over 65,536 bytes were dropped by SentencePiece while the console said it trained on them all."""
    long = "qwertyuiop " * 7000  # 77,000 bytes; its letters are in no other text
    path = V.train_vocabulary(["CCO is ethanol", "c1ccccc1", long], tmp_path / "v", vocab_size=400, hard_vocab_limit=False)
    processor = spm.SentencePieceProcessor(model_file=path)
    assert not any(processor.is_byte(i) for i in processor.encode("qwertyuiop"))  # not unseen characters' bytes


NOPRETOK_TASKS = """
import functools
import seqio
import tensorflow as tf
from textchem_jax.data import vocabulary

seqio.TaskRegistry.add(
    "my_vocab_nopretok",
    seqio.FunctionDataSource(lambda split, shuffle_files=False, seed=None: tf.data.Dataset.from_tensor_slices(
        {"inputs": ["CCO"], "targets": ["ethanol"]}), splits=["train"]),
    preprocessors=[functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False)],
    output_features={name: seqio.Feature(vocabulary.default_vocabulary()) for name in ("inputs", "targets")})
"""


def test_a_task_without_raw_texts_and_module_import_without_mixture_are_named(tmp_path, monkeypatch, capsys):
    """A task tokenized with copy_pretokenized=False gave "no texts: give --input or --mixture" though --mixture
    was given; --module_import without --mixture was ignored without a word."""
    import seqio

    (tmp_path / "my_vocab_tasks.py").write_text(NOPRETOK_TASKS)
    monkeypatch.chdir(tmp_path)
    try:
        assert vocab_cli.main(["--module_import=my_vocab_tasks", "--mixture=my_vocab_nopretok",
                               f"--output_prefix={tmp_path / 'v'}"]) == 2  # fmt: skip
        assert "task my_vocab_nopretok has no *_pretokenized features" in capsys.readouterr().err
    finally:
        if "my_vocab_nopretok" in seqio.TaskRegistry.names():
            seqio.TaskRegistry.remove("my_vocab_nopretok")
        sys.modules.pop("my_vocab_tasks", None)
    (tmp_path / "texts.txt").write_text("CCO\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        vocab_cli.main(["--module_import=my_vocab_tasks", "--input", str(tmp_path / "texts.txt"),
                        f"--output_prefix={tmp_path / 'v'}"])  # fmt: skip
    assert "--module_import registers tasks for --mixture, which is not given" in capsys.readouterr().err


@pytest.mark.needs_data
def test_the_tasks_tokenize_as_sentencepiece_and_hugging_face_do(data):
    """SeqIO's vocabulary tokenizes in tf.data with tf_text's op, which breaks ties between equally scored
    segmentations otherwise than sentencepiece ('CC CC C' where sentencepiece gives 'C CC CC'): 112 of 2,000 ChEBI-20
    texts got other ids in training and evaluation than in Python `encode`, Hugging Face's tokenizer and the paper's
    training, so a released checkpoint read them in segmentations it never saw. The real task's pipeline here."""
    import seqio

    from textchem_jax import run_config

    run_config.register_our_tasks()
    vocabulary = V.default_vocabulary()
    plain = seqio.SentencePieceVocabulary(V.DEFAULT_VOCABULARY_PATH, extra_ids=V.T5_EXTRA_IDS)
    datasets.set_data_dir(str(data))
    try:
        task = seqio.get_mixture_or_task("textchem_mol2text")
        examples = list(task.get_dataset(None, split="validation", shuffle=False).take(1000).as_numpy_iterator())
    finally:
        datasets.set_data_dir(None)
    ties = 0
    for example in examples:
        for feature in ("inputs", "targets"):
            text = example[f"{feature}_pretokenized"].decode()
            assert example[feature].tolist() == [*vocabulary.tokenizer.EncodeAsIds(text), 1], text  # EOS
            ties += plain.encode_tf(text).numpy().tolist() != example[feature].tolist()[:-1]
    assert ties > 0  # the op's own choice differs on some: this split shows the difference the test is about
    assert [ids.tolist() for ids in V.encode_as_tasks(vocabulary, ["CCCCCCCCCCC", "OC(=O)CCCCC"])] == [
        vocabulary.tokenizer.EncodeAsIds("CCCCCCCCCCC"), vocabulary.tokenizer.EncodeAsIds("OC(=O)CCCCC")]


def test_encode_tf_refuses_a_tensor_of_unknown_or_higher_rank():
    """A string tensor of unknown rank (from a user's tf.py_function) became a (None, None) RaggedTensor, a scalar's
    ids a row of one: shapes went wrong far from the cause (tf_text's op refused it)."""
    import tensorflow as tf

    vocabulary = V.default_vocabulary()

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string)])
    def unknown_rank(text):
        return vocabulary.encode_tf(text)

    with pytest.raises(ValueError, match=r"not a tensor of shape <unknown>: give it a tensor of known rank 0 or 1"):
        unknown_rank(tf.constant("CCO"))
    with pytest.raises(ValueError, match=r"not a tensor of shape \(2, 1\)"):
        vocabulary.encode_tf(tf.constant([["CCO"], ["CCN"]]))
    assert vocabulary.encode_tf(tf.constant("CCO")).numpy().tolist() == vocabulary.encode("CCO")


def test_a_plain_seqio_vocabulary_given_to_the_tasks_tokenizes_as_sentencepiece(tmp_path):
    """VOCABULARY bound as a plain seqio.SentencePieceVocabulary (T5X's own gin files do) put the tasks back on
    tf_text's op: seqio finds it equal to ours, so it was kept as it came."""
    import shutil

    import seqio
    import tensorflow as tf

    from textchem_jax import run_config
    from textchem_jax.data import seqio_tasks
    from textchem_jax.data.spm_vocabulary import SentencePieceVocabulary

    run_config.register_our_tasks()
    shutil.copy(V.DEFAULT_VOCABULARY_PATH, tmp_path / "spiece.model")
    plain = seqio.SentencePieceVocabulary(str(tmp_path / "spiece.model"), extra_ids=V.T5_EXTRA_IDS)
    assert type(seqio_tasks.use_vocabulary(plain)) is SentencePieceVocabulary
    used = seqio.get_mixture_or_task("textchem_demo_forward").output_features["inputs"].vocabulary
    assert type(used) is SentencePieceVocabulary and used == plain
    text = "OC(=O)CCCCCCCCCCC"  # equally scored segmentations: the op's differs
    assert plain.encode_tf(tf.constant(text)).numpy().tolist() != plain.encode(text)
    assert used.encode_tf(tf.constant(text)).numpy().tolist() == plain.encode(text)


def test_tokenizing_in_batches_gives_seqios_examples_in_order():
    """Our tasks tokenize `TOKENIZED_TOGETHER` examples per call (one Python call per example cost 250 us for 10 us
    of sentencepiece: 1,000 examples/s against the op's 3,800): the same examples, in the same order, with the
    features SeqIO's tokenize passes through, a last partial batch included."""
    import seqio
    import tensorflow as tf

    from textchem_jax.data.preprocessors import tokenize

    vocabulary = V.default_vocabulary()
    features = {"inputs": seqio.Feature(vocabulary), "targets": seqio.Feature(vocabulary)}
    texts = [f"CC{'C' * (i % 7)}O ethanol {i}" for i in range(300)]  # 256 + 44
    examples = tf.data.Dataset.from_tensor_slices({"inputs": texts, "targets": texts[::-1], "number": list(range(300))})
    ours = list(tokenize(examples, features, rows=256).as_numpy_iterator())
    theirs = list(seqio.preprocessors.tokenize(examples, features).as_numpy_iterator())
    assert len(ours) == len(theirs) == 300
    for mine, seqios in zip(ours, theirs):
        assert sorted(mine) == sorted(seqios) == ["inputs", "inputs_pretokenized", "number", "targets",
                                                  "targets_pretokenized"]  # fmt: skip
        assert all(np.array_equal(mine[key], seqios[key]) for key in mine)


def test_blank_texts_are_not_texts_and_none_left_is_one_line(tmp_path, capsys):
    """Rows of "" ended in a traceback (ValueError: no non-empty training texts), and rows of " " were counted and
    trained on as texts."""
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"source": "", "target": ""}\n{"source": " ", "target": "  "}\n')
    assert vocab_cli.main(["--input", str(blank), "--output_prefix", str(tmp_path / "v")]) == 2
    error = capsys.readouterr().err
    assert f"\ntextchem-vocab: no texts in {blank} (" in error and "Traceback" not in error
    assert not (tmp_path / "v.model").exists()
    blank.write_text('{"source": "CCO", "target": " "}\n{"input": "c1ccccc1", "target": ""}\n')
    assert V.read_texts(blank) == ["CCO", "c1ccccc1"]
    assert vocab_cli.main(["--input", str(blank), "--output_prefix", str(tmp_path / "v"), "--vocab_size=400", "--soft_vocab_limit"]) == 0
    assert "training SentencePiece on 2 texts" in capsys.readouterr().out


def test_a_chebi20_txt_gives_its_smiles_and_descriptions(data, tmp_path):
    """textchem-vocab --input chebi20/test.txt trained on raw lines: the header, the CIDs, tabs and ChEBI-20's
    doubled backslashes became training text."""
    texts = V.read_texts(data / "chebi20" / "test.txt")
    records = sources.read_chebi20(str(data / "chebi20" / "test.txt"), keep_unreadable=True)
    assert texts == [text for record in records for text in (record.smiles, record.description)]
    assert not any("\t" in text or "\\\\" in text for text in texts) and "CID" not in texts[:3]
    assert any("\\" in text for text in texts)  # cis/trans stereo, single backslashes


def test_rows_that_give_no_text_are_skipped_and_said(tmp_path, capsys):
    """A .jsonl line that is no object or whose fields are no strings, and a .csv row of another field count than
    its header's, vanished without a word (the .csv's trimmed or padded)."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"source": "CCO"}\n[1, 2]\n"text"\n{"source": 5}\n{"input": "c1ccccc1", "target": {"a": 1}}\n')
    table = tmp_path / "table.csv"
    table.write_text("input,target\nCCO,ethanol,extra\nlonely\nCCN,ethylamine\n")
    report = sources.SkipReport()
    assert V.read_texts(rows, report=report) == ["CCO", "c1ccccc1"]
    assert V.read_texts(table, report=report) == ["CCN", "ethylamine"]
    assert [line for line, _ in report.files[str(rows)].skipped] == [2, 3, 4]
    assert report.files[str(rows)].notes == [(5, "not strings, left out: 'target' (dict)")]
    assert report.files[str(table)].skipped == [(2, "expected 2 fields (the header's), found 3"),
                                                 (3, "expected 2 fields (the header's), found 1")]  # fmt: skip
    code = vocab_cli.main(["--input", str(rows), str(table), "--output_prefix", str(tmp_path / "v"),
                           "--vocab_size=400", "--soft_vocab_limit"])  # fmt: skip
    error = capsys.readouterr().err
    assert code == 0, error
    assert error.startswith("warning: --input rows skipped or kept with a fault:\n")
    assert (f"{rows}: 2 rows read, 3 skipped\n  line 2: not a JSON object with text fields: [1, 2]\n"
            '  line 3: not a JSON object with text fields: "text"\n') in error
    assert f"{table}: 1 rows read, 2 skipped\n  line 2: expected 2 fields" in error
