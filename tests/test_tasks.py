"""SeqIO tasks and mixtures: registration, prompts, determinism, host sharding, real data, inspection."""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import seqio
import tensorflow as tf
from helpers import USER_TASKS

import tasks  # noqa: F401  (registers everything)
from textchem_jax.chem import canonicalize
from textchem_jax.data import datasets
from textchem_jax.data.seqio_tasks import SPECS, TASKS
from textchem_jax import inspect as inspect_lib
from textchem_jax.inspect import main as inspect_main

MIXTURES = ("textchem_standard", "textchem_augm", "textchem_mono", "textchem_cross", "textchem_demo")


def test_everything_is_registered_with_metrics_and_postprocessors():
    for task in TASKS:
        for name in (f"textchem_{task}", f"textchem_demo_{task}"):
            registered = seqio.get_mixture_or_task(name)
            assert registered.metric_fns and registered.postprocess_fn is not None
    for name in MIXTURES:
        assert isinstance(seqio.get_mixture_or_task(name), seqio.Mixture)
    assert {t.name for t in seqio.get_mixture_or_task("textchem_cross").tasks} == {"textchem_text2mol", "textchem_mol2text"}


def _examples(name: str, split: str = "validation", **kwargs) -> list[dict]:
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, use_cached=False, **kwargs)
    return list(ds.as_numpy_iterator())


def test_demo_examples_carry_the_exact_prompts_and_round_trip():
    for task in TASKS:
        examples = _examples(f"textchem_demo_{task}")
        assert examples, task
        vocab = seqio.get_mixture_or_task(f"textchem_demo_{task}").output_features["inputs"].vocabulary
        for example in examples[:10]:
            inputs = example["inputs_pretokenized"].decode()
            assert inputs.startswith(datasets.PROMPTS[task])
            assert example["inputs"][-1] == 1 and example["targets"][-1] == 1  # EOS appended
            assert vocab.decode(example["targets"].tolist()) == example["targets_pretokenized"].decode()
        if task == "retro":
            assert examples[0]["product"].decode() == examples[0]["inputs_pretokenized"].decode()[len(datasets.PROMPTS[task]):]


def test_shards_partition_the_examples():
    everything = [e["targets_pretokenized"] for e in _examples("textchem_demo_text2mol", split="train")]
    shards = [
        [e["targets_pretokenized"] for e in _examples("textchem_demo_text2mol", split="train", shard_info=seqio.ShardInfo(i, 2))]
        for i in range(2)
    ]
    assert sorted(shards[0] + shards[1]) == sorted(everything)
    assert not set(shards[0]) & set(shards[1])


def _packed_batches(seed: int, count: int = 3) -> list[dict]:
    ds = seqio.get_dataset(
        "textchem_demo",
        task_feature_lengths={"inputs": 512, "targets": 512},
        dataset_split="train",
        shuffle=True,
        seed=seed,
        feature_converter=seqio.EncDecFeatureConverter(pack=True),
    ).batch(4)
    return list(ds.take(count).as_numpy_iterator())


def test_packed_mixture_is_deterministic_for_a_seed():
    first, again, other = _packed_batches(7), _packed_batches(7), _packed_batches(8)
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(first[0]["encoder_input_tokens"], other[0]["encoder_input_tokens"])
    batch = first[0]
    assert batch["encoder_input_tokens"].shape == (4, 512)
    assert batch["encoder_segment_ids"].max() > 1  # several examples packed per row


def test_augm_replicates_cross_domain_tasks_and_standard_follows_example_counts():
    from textchem_jax.data.seqio_tasks import augm_rate, count_examples

    demo = seqio.get_mixture_or_task("textchem_demo")
    rates = {t.name: demo.get_rate(t) for t in demo.tasks}
    assert rates["textchem_demo_paragraph2actions"] == pytest.approx(rates["textchem_demo_forward"] / 2)
    # The paper's augm: text2mol and mol2text replicated up to the largest task; the others keep their sizes.
    rate = augm_rate("textchem_demo_")
    augm = {t.name: rate(t) for t in demo.tasks}
    mono = {f"textchem_demo_{t}": count_examples(f"textchem_demo_{t}") for t in ("forward", "retro", "paragraph2actions")}
    assert {name: augm[name] for name in mono} == mono
    assert augm["textchem_demo_text2mol"] == augm["textchem_demo_mol2text"] == max(mono.values())
    two_million = augm_rate("textchem_demo_", cross_domain_examples=2_300_000)
    assert two_million(seqio.get_mixture_or_task("textchem_demo_mol2text")) == 2_300_000


def test_demo_splits_do_not_leak():
    for task in ("text2mol", "mol2text", "forward", "retro"):
        spec = SPECS[f"textchem_demo_{task}"]
        assert datasets.leaked_molecules(task, spec.directory(), reactions=spec.reactions) == []


def test_augmentation_adds_randomized_smiles_to_training_only():
    spec = SPECS["textchem_demo_mol2text"]
    plain = datasets.task_pairs("mol2text", "train", spec.directory())
    augmented = datasets.task_pairs("mol2text", "train", spec.directory(), augment=2, seed=3)
    assert len(augmented) == 3 * len(plain)
    assert augmented == datasets.task_pairs("mol2text", "train", spec.directory(), augment=2, seed=3)
    assert datasets.task_pairs("mol2text", "test", spec.directory(), augment=2) == datasets.task_pairs("mol2text", "test", spec.directory())


@pytest.mark.needs_data
def test_real_tasks_read_the_shared_data(data, monkeypatch):
    monkeypatch.setenv("TEXTCHEM_DATA_DIR", str(data))
    assert len(_examples("textchem_text2mol", split="test")) == 3300
    assert len(_examples("textchem_paragraph2actions", split="train")) == 80
    with pytest.raises(FileNotFoundError, match="chebi20/train.txt"):
        _examples("textchem_mol2text", split="train")


@pytest.mark.needs_data
def test_a_task_reads_gt4sds_own_training_files(data):
    """GT4SD's jsonl was in the documented data layout, but no task could read it: `source="gt4sd"` was a
    TypeError from TaskSpec."""
    from textchem_jax.data import seqio_tasks

    rows = [json.loads(line) for line in (data / "gt4sd_sample" / "valid.jsonl").read_text().splitlines()]
    for task in TASKS:
        name = f"test_gt4sd_source_{task}"
        if name not in seqio.TaskRegistry.names():
            seqio_tasks.register_task(name, task, lambda: str(data), source="gt4sd")
        examples = _examples(name)
        expected = [(r["source"], r["target"]) for r in rows if r["source"].startswith(datasets.PROMPTS[task])]
        read = [(e["inputs_pretokenized"].decode(), e["targets_pretokenized"].decode()) for e in examples]
        assert expected and read == expected


def test_inspect_demo():
    command = [sys.executable, "-m", "textchem_jax.inspect", "--mixture=textchem_demo", "--max_examples=50"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""  # the console is ours: TensorFlow's and CUDA's start-up lines only with --verbose
    out = result.stdout
    assert "effective mixture rates" in out and "textchem_demo_retro" in out and "skipped rows" in out
    assert "Predict the product of the following reaction: " in out


def test_feature_lengths_take_the_flag_form_and_gins_dict():
    """--task_feature_lengths as TASK_FEATURE_LENGTHS is written in a gin file was refused (robustness, inspect)."""
    from textchem_jax.inspect import feature_lengths

    assert feature_lengths("inputs=128,targets=64") == feature_lengths("{'inputs': 128, 'targets': 64}") == {"inputs": 128, "targets": 64}
    for wrong in ("inputs=0", "{'inputs': 1.5}", "{inputs: 5}", "[128]", "outputs=5"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected inputs=N,targets=M or"):
            feature_lengths(wrong)


@pytest.mark.slow
@pytest.mark.needs_data
def test_inspect_real_standard_mixture(data, capsys):
    code = inspect_main(["--mixture=textchem_standard", "--split=test", f"--data_dir={data}", "--max_examples=300",
                         "--task_feature_lengths=inputs=128,targets=64"])
    datasets.set_data_dir(None)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "line 689" in out  # the known unreadable USPTO-MIT test reaction is reported
    assert "textchem_text2mol" in out


def test_inspect_reads_a_users_own_tasks_with_the_given_vocabulary(tmp_path, monkeypatch, capsys):
    """--vocabulary is set before --module_import's tasks are registered: a user's task that takes
    `seqio_tasks.vocabulary()` was inspected with the default one, its lengths and <unk> rates silently wrong."""
    from helpers import t5_like_vocabulary

    from textchem_jax.data import seqio_tasks
    from textchem_jax.data import vocabulary as vocabularies

    other = t5_like_vocabulary(tmp_path / "other", pieces=2000)
    expected = vocabularies.load_vocabulary(other).encode("Spell: benzene")
    assert expected != vocabularies.default_vocabulary().encode("Spell: benzene")
    (tmp_path / "my_spelling_tasks.py").write_text(USER_TASKS)
    monkeypatch.chdir(tmp_path)
    try:
        assert inspect_main(["--task=my_spelling", "--module_import=my_spelling_tasks", f"--vocabulary={other}",
                             "--split=test", "--num_examples=1"]) == 0  # fmt: skip
        out = capsys.readouterr().out
        assert f"inputs ids ({len(expected) + 1}): {[*expected, 1]}" in out, out  # with its EOS
    finally:
        seqio.TaskRegistry.remove("my_spelling")
        sys.modules.pop("my_spelling_tasks", None)
        seqio_tasks.use_vocabulary(vocabularies.task_vocabulary())  # the other tests' tasks: as they were


def test_inspect_lists_and_reads_a_users_own_tasks_and_names_close_ones(tmp_path, monkeypatch, capsys):
    """A user's own tasks module (--module_import, as MIXTURE_OR_TASK_MODULE) is listed and inspected (its
    tasks have no data files of ours), found in the working directory as `python -m t5x.train` finds it (our
    console scripts start without it on sys.path); a misspelt name gets the registered names closest to it."""
    (tmp_path / "my_spelling_tasks.py").write_text(USER_TASKS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [path for path in sys.path if path not in ("", str(tmp_path))])
    try:
        assert inspect_main(["--list", "--module_import=my_spelling_tasks"]) == 0
        listed = capsys.readouterr().out
        assert "  my_spelling\n" in listed and "  textchem_demo\n" in listed
        assert inspect_main(["--task=my_spelling", "--module_import=my_spelling_tasks", "--split=test"]) == 0
        out = capsys.readouterr().out
        assert "inputs: Spell: benzene" in out and re.search(r"my_spelling +inputs +16 ", out)
        from textchem_jax.vocab import mixture_texts  # textchem-vocab --mixture: a user's task's texts too

        assert mixture_texts("my_spelling", "train")[:4] == ["Spell: benzene", "benzene", "Spell: ethanol", "ethanol"]
    finally:
        seqio.TaskRegistry.remove("my_spelling")
        sys.modules.pop("my_spelling_tasks", None)
    assert inspect_main(["--task=textchem_demo_forwad"]) == 2
    assert "did you mean 'textchem_demo_forward'" in capsys.readouterr().err
    assert inspect_main(["--list", "--module_import=no_such_tasks"]) == 2
    assert "the tasks module 'no_such_tasks' (MIXTURE_OR_TASK_MODULE) is not importable" in capsys.readouterr().err


def test_inspect_reports_missing_data_clearly(tmp_path, capsys):
    assert inspect_main(["--task=textchem_text2mol", f"--data_dir={tmp_path}"]) == 2
    datasets.set_data_dir(None)
    assert "chebi20/validation.txt" in capsys.readouterr().err


@pytest.mark.needs_data
def test_optional_canonicalization(data):
    raw = datasets.task_pairs("text2mol", "test", str(data))[:200]
    canonical = datasets.task_pairs("text2mol", "test", str(data), canonical=True)[:200]
    assert [d for d, _ in raw] == [d for d, _ in canonical]  # descriptions untouched
    assert sum(a != b for (_, a), (_, b) in zip(raw, canonical)) > 50  # ChEBI SMILES are not RDKit-canonical
    assert all(canonicalize(s) == s for _, s in canonical)


def test_registered_metric_functions_report_every_key_even_when_not_computable(tmp_path, monkeypatch):
    """METEOR without WordNet and retrosynthesis round trip without a forward model: present, NaN (n/a)."""
    import math

    from textchem_jax.metrics import wordnet as wordnet_module

    monkeypatch.setattr(wordnet_module, "_candidates", lambda: [tmp_path])
    wordnet_module.load_wordnet.cache_clear()
    try:
        (mol2text,) = seqio.get_mixture_or_task("textchem_demo_mol2text").metric_fns
        with pytest.warns(UserWarning, match="wordnet-base"):
            results = mol2text(["a benzene ring"], ["a benzene ring"])
    finally:
        wordnet_module.load_wordnet.cache_clear()
    assert set(results) == {"bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"}
    assert math.isnan(results["meteor"]) and results["rouge1"] == 1.0
    (retro,) = seqio.get_mixture_or_task("textchem_demo_retro").metric_fns
    results = retro([{"target": "CCO", "product": "CC=O"}], ["CCO"])
    assert "roundtrip_accuracy" in results and math.isnan(results["roundtrip_accuracy"])


def test_a_task_says_which_rows_it_skipped_and_names_the_file_when_none_is_left(tmp_path, caplog):
    """The rows SeqIO's examples leave out (the denominators of every metric) are logged once, by file:line;
    a split with no row left is an error that shows why."""
    from textchem_jax.data import seqio_tasks

    (tmp_path / "chebi20").mkdir()
    (tmp_path / "chebi20" / "test.txt").write_text(
        "CID\tSMILES\tdescription\n1\tCCO\tThe molecule is ethanol.\n2\tCCN\n3\tCCC\tThe molecule is propane.\n")
    (tmp_path / "chebi20" / "validation.txt").write_text("1,CCO,The molecule is ethanol.\n")
    seqio_tasks.register_task("test_skips_text2mol", "text2mol", lambda: str(tmp_path))
    try:
        task = seqio.get_mixture_or_task("test_skips_text2mol")
        with caplog.at_level(logging.WARNING, logger="textchem_jax.data"):
            for _ in range(2):  # as at every evaluation
                assert len(list(task.get_dataset(None, split="test", shuffle=False))) == 2
        warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert f"{tmp_path / 'chebi20' / 'test.txt'}: 2 rows read, 1 skipped\n  line 3: expected 3 tab-separated fields, found 2" in warnings[0]
        with pytest.raises(ValueError, match=r"has no valid examples\n.*validation.txt: 0 rows read, 1 skipped\n  line 1: expected 3"):
            task.get_dataset(None, split="validation", shuffle=False)
    finally:
        seqio.TaskRegistry.remove("test_skips_text2mol")


def test_inspect_tokenizes_with_a_checkpoints_own_vocabulary(tmp_path, capsys):
    from textchem_jax.data import seqio_tasks
    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.data.demo import demo_data_dir

    texts = [line for path in sorted(demo_data_dir().rglob("*.txt")) for line in path.read_text().splitlines()]
    (tmp_path / "checkpoint").mkdir()
    vocabularies.train_plain_vocabulary(texts, tmp_path / "checkpoint" / "spiece", vocab_size=400)
    flags = ["--task=textchem_demo_text2mol", "--max_examples=20", "--num_examples=1"]
    try:
        assert inspect_main(flags) == 0
        default_ids = [line for line in capsys.readouterr().out.splitlines() if "inputs ids" in line]
        assert inspect_main([*flags, f"--vocabulary={tmp_path / 'checkpoint'}"]) == 0
        own_ids = [line for line in capsys.readouterr().out.splitlines() if "inputs ids" in line]
        assert own_ids and own_ids != default_ids
        assert seqio_tasks.vocabulary().vocab_size == 500  # 400 pieces + 100 sentinels
        assert inspect_main([*flags, f"--vocabulary={tmp_path}"]) == 2  # a folder without spiece.model
        assert "brings no vocabulary" in capsys.readouterr().err
    finally:
        seqio_tasks.use_vocabulary(vocabularies.default_vocabulary())


@pytest.mark.slow
@pytest.mark.needs_data
def test_real_augm_replicates_chebi20_to_the_largest_task(data, monkeypatch):
    monkeypatch.setenv("TEXTCHEM_DATA_DIR", str(data))
    augm = seqio.get_mixture_or_task("textchem_augm")
    rates = {t.name.removeprefix("textchem_"): augm.get_rate(t) for t in augm.tasks}
    largest = max(rates["forward"], rates["retro"], rates["paragraph2actions"])
    assert rates["text2mol"] == rates["mol2text"] == largest
    assert largest > 3 * 3301  # far more than ChEBI-20's own validation examples: replicated



def test_tasks_evaluate_with_seqios_standard_converter_as_t5x_does(tmp_path):
    """`input_domain` is no output feature: seqio's Evaluator with the standard EncDecFeatureConverter (what
    T5X's eval builds) accepts our tasks; the field still reaches e2-CLM through its own converter."""
    task = seqio.get_mixture_or_task("textchem_demo_forward")
    assert set(task.output_features) == {"inputs", "targets"}
    evaluator = seqio.Evaluator("textchem_demo_forward", seqio.EncDecFeatureConverter(pack=False), eval_split="validation",
                                sequence_length={"inputs": 64, "targets": 32}, num_examples=4)  # fmt: skip
    features = evaluator.model_feature_shapes
    assert "input_domain" not in features and "encoder_input_tokens" in features
    example = next(task.get_dataset({"inputs": 64, "targets": 32}, split="validation", shuffle=False).as_numpy_iterator())
    assert example["input_domain"].shape == example["inputs"].shape and set(example["input_domain"]) == {1}


def test_a_routed_model_names_what_a_users_task_lacks():
    from helpers import tiny_e2clm
    from textchem_jax.run_config import DatasetConfig, get_dataset

    import tensorflow as tf

    from textchem_jax.data.seqio_tasks import vocabulary

    def examples(split, shuffle_files, seed=None):
        return tf.data.Dataset.from_tensor_slices({"inputs": ["a b"], "targets": ["c"]})

    name = "test_users_task_without_domain"
    if name not in seqio.TaskRegistry.names():
        seqio.TaskRegistry.add(
            name,
            source=seqio.FunctionDataSource(examples, splits=("train",)),
            preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
            output_features={"inputs": seqio.Feature(vocabulary()), "targets": seqio.Feature(vocabulary())},
        )
    cfg = DatasetConfig(name, {"inputs": 8, "targets": 8}, "train", 1)
    with pytest.raises(ValueError, match="gives no 'input_domain'.*add_input_domain"):
        get_dataset(cfg, tiny_e2clm(aggregation="select"))
    assert next(iter(get_dataset(cfg, tiny_e2clm(aggregation="mean")).take(1)))  # the mean needs none


def test_tasks_are_cacheable_the_seqio_way():
    """A cache placeholder after the deterministic steps: what comes before it is the same for any seed."""
    task = seqio.get_mixture_or_task("textchem_demo_forward")
    names = [getattr(p, "func", p).__name__ if not isinstance(p, seqio.CacheDatasetPlaceholder) else "cache" for p in task.preprocessors]
    assert task.supports_caching and names == ["add_prompt", "tokenize", "cache", "append_eos_after_trim", "add_input_domain"]
    lengths = {"inputs": 64, "targets": 64}
    runs = [list(task.get_dataset(lengths, split="validation", shuffle=False, seed=seed).take(3).as_numpy_iterator())
            for seed in (1, 2)]  # fmt: skip
    assert all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(*runs))


@pytest.mark.parametrize("routed", [False, True], ids=["t5", "e2clm_domains"])
def test_parallel_packing_gives_each_chunks_own_packed_rows_in_order(routed):
    """Chunks of examples packed at once on all cores: the rows are exactly those of packing each chunk alone,
    chunk after chunk (an interleave whose blocks hold whole chunks); every example is in them once."""
    from textchem_jax.models import feature_converters

    lengths = {"inputs": 128, "targets": 64}
    name = "textchem_demo_forward"  # its preprocessors add input_domain
    examples = seqio.get_mixture_or_task(name).get_dataset(lengths, split="train", shuffle=False).take(100)
    converter = (feature_converters.domain_feature_converter if routed else feature_converters.encoder_decoder_feature_converter)(pack=True)  # fmt: skip
    parallel = list(feature_converters.convert_in_parallel(converter, examples, lengths, chunk_size=16).as_numpy_iterator())
    one_by_one = [row for start in range(0, 100, 16)
                  for row in converter(examples.skip(start).take(16), lengths).as_numpy_iterator()]  # fmt: skip
    assert len(parallel) == len(one_by_one) < 100  # packed: fewer rows than examples
    for ours, expected in zip(parallel, one_by_one):
        assert ours.keys() == expected.keys() and ("input_domain" in ours) == routed
        for key in ours:
            np.testing.assert_array_equal(ours[key], expected[key])
    segments = sum(len(set(row["encoder_segment_ids"][row["encoder_segment_ids"] > 0])) for row in parallel)
    inputs = sorted(tuple(e["inputs"]) for e in examples.as_numpy_iterator())
    packed = sorted(tuple(row["encoder_input_tokens"][row["encoder_segment_ids"] == s])
                    for row in parallel for s in set(row["encoder_segment_ids"]) - {0})  # fmt: skip
    assert segments == 100 and packed == inputs


def test_packing_keeps_every_tokens_input_domain():
    """Text is domain 0, which SeqIO's packing drops as padding: a text example's domains vanished and the next
    example's shifted into its tokens (11.3% of the demo mixture's packed tokens went to the wrong encoder)."""
    from textchem_jax.models import feature_converters

    lengths = {"inputs": 128, "targets": 64}
    streams = [seqio.get_mixture_or_task(name).get_dataset(lengths, split="train", shuffle=False).take(30)
               .map(lambda e: {key: e[key] for key in ("inputs", "targets", "input_domain")})
               for name in ("textchem_demo_text2mol", "textchem_demo_forward")]  # text, chemistry  # fmt: skip
    alternating = tf.data.Dataset.choose_from_datasets(streams, tf.data.Dataset.range(2).repeat(30))
    domain_of = {tuple(e["inputs"]): e["input_domain"] for e in alternating.as_numpy_iterator()}
    assert sorted({int(d[0]) for d in domain_of.values()}) == [0, 1]
    converter = feature_converters.domain_feature_converter(pack=True)
    rows = list(converter(alternating, lengths).as_numpy_iterator())
    segments = 0
    for row in rows:
        for segment in set(row["encoder_segment_ids"]) - {0}:
            tokens = row["encoder_segment_ids"] == segment
            np.testing.assert_array_equal(row["input_domain"][tokens], domain_of[tuple(row["encoder_input_tokens"][tokens])])
            segments += 1
    assert segments == 60 and len(rows) < 60


def test_cached_tasks_without_a_cache_say_how_to_make_one(tmp_path):
    """USE_CACHED_TASKS with no cache ended in seqio's AssertionError traceback, deep inside get_dataset."""
    import seqio
    from helpers import LENGTHS, tiny_t5

    from textchem_jax.run_config import DatasetConfig, checked_provider

    def provider(name: str, cached: bool = True):
        return checked_provider(DatasetConfig(name, LENGTHS, "train", 4, use_cached=cached), tiny_t5())

    with pytest.raises(ValueError, match=r"USE_CACHED_TASKS: textchem_demo_forward has no SeqIO cache .*cache_tasks_main "
                                         r".*--seqio_additional_cache_dirs=DIR, or .* USE_CACHED_TASKS = False"):
        provider("textchem_demo_forward")
    with pytest.raises(ValueError, match=r"textchem_demo_forward, textchem_demo_mol2text, .* have no SeqIO cache"):
        provider("textchem_demo")
    assert provider("textchem_demo", cached=False).name == "textchem_demo"
    (tmp_path / "textchem_demo_forward").mkdir()  # a cache folder for the task, as cache_tasks_main writes it
    (tmp_path / "textchem_demo_forward" / "COMPLETED").write_text("")
    seqio.add_global_cache_dirs([str(tmp_path)])
    try:
        assert provider("textchem_demo_forward").name == "textchem_demo_forward"
    finally:
        seqio.utils.set_global_cache_dirs([d for d in seqio.utils.get_global_cache_dirs() if d != str(tmp_path)])
        seqio.get_mixture_or_task("textchem_demo_forward")._cache_dir = None  # seqio keeps the folder it found


def test_a_task_with_another_vocabulary_than_the_models_is_refused(tmp_path):
    """A user's task tokenizing with its own SentencePiece model trained, evaluated and exited 0 (T5X says "Model
    and Task vocabularies do not match")."""
    from helpers import tiny_t5

    from textchem_jax.data import vocabulary as vocabularies
    from textchem_jax.run_config import check_vocabularies

    texts = ["The molecule is an alcohol.", "CCO", "c1ccccc1", "benzene and toluene"] * 30
    own = vocabularies.load_vocabulary(vocabularies.train_vocabulary(texts, tmp_path / "own", vocab_size=400, hard_vocab_limit=False))
    task = seqio.Task("my_own_vocabulary", source=seqio.FunctionDataSource(lambda split, shuffle_files: None, splits=["train"]),
                      preprocessors=[], output_features={"inputs": seqio.Feature(own), "targets": seqio.Feature(own)})  # fmt: skip
    model = tiny_t5()
    with pytest.raises(ValueError, match=r"task my_own_vocabulary writes its inputs with the vocabulary .*own.model, the "
                                         r"model reads .*: bind VOCABULARY to the task's"):  # fmt: skip
        check_vocabularies([task], model)
    check_vocabularies(seqio.get_subtasks(seqio.get_mixture_or_task("textchem_demo")), model)  # ours take the model's


def test_a_task_without_the_features_the_model_reads_is_named():
    """A task without `targets` trained into AutoGraph's "in user code" stack ending "Dataset has incorrect type
    for feature 'targets'"; inference reads inputs only, and takes such a task."""
    from helpers import tiny_t5

    from textchem_jax.data import seqio_tasks
    from textchem_jax.run_config import check_vocabularies

    task = seqio.Task("my_inputs_only", source=seqio.FunctionDataSource(lambda split, shuffle_files: None, splits=["train"]),
                      preprocessors=[], output_features={"inputs": seqio.Feature(seqio_tasks.vocabulary())})  # fmt: skip
    with pytest.raises(ValueError, match=r"^task my_inputs_only has the output features inputs, the model reads inputs "
                                         r"and targets: add 'targets' to the task's output_features, e\.g\. 'targets': "
                                         r"seqio\.Feature\(seqio_tasks\.vocabulary\(\), add_eos=True\)$"):  # fmt: skip
        check_vocabularies([task], tiny_t5(), ("inputs", "targets"))
    check_vocabularies([task], tiny_t5(), ("inputs",))  # what textchem-infer reads


@pytest.mark.parametrize("registered, said", [
    ("twice", r"registers 'users_twice_mix' twice: register it once, or register it only when it is not there yet "
              r"\(`if name not in seqio\.TaskRegistry\.names\(\):`, seqio\.MixtureRegistry for a mixture\)$"),
    ("ours", r"registers 'textchem_demo', a name of textchem_jax's own tasks and mixtures: give yours another name$"),
    ("unknown", r"refers to the task or mixture 'textchem_demo_forwrd', which is not registered: register it before "
                r"what refers to it \(a mixture of it\), or correct the name \(did you mean 'textchem_demo_forward'.*\?\)$"),
], ids=["twice", "ours", "unknown"])  # fmt: skip
def test_a_users_module_registering_a_name_twice_or_one_of_ours_is_named(tmp_path, monkeypatch, registered, said):
    """SeqIO said only "Attempting to register duplicate provider: textchem_demo_forward", naming neither the module
    nor that the name is one of ours; a mixture of a task no module registered, "Provider name not registered:
    NAME"."""
    from textchem_jax.run_config import import_task_module

    module = f"users_{registered}_tasks"
    name = {"twice": "users_twice_mix", "ours": "textchem_demo", "unknown": "users_unknown_mix"}[registered]
    task = "textchem_demo_forwrd" if registered == "unknown" else "textchem_demo_forward"
    line = f"seqio.MixtureRegistry.add({name!r}, [({task!r}, 1.0)])\n"
    (tmp_path / f"{module}.py").write_text("import seqio\n" + line * (2 if registered == "twice" else 1))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ValueError, match=rf"^the tasks module '{module}' \(MIXTURE_OR_TASK_MODULE\) {said}"):
            import_task_module(module)
    finally:
        sys.modules.pop(module, None)
        if registered != "ours" and name in seqio.MixtureRegistry.names():
            seqio.MixtureRegistry.remove(name)
    assert "textchem_demo" in seqio.MixtureRegistry.names()  # ours stays


def test_a_users_tasks_py_that_hides_ours_is_named(tmp_path):
    """`python -m textchem_jax.inspect` (or .train) run from a folder with the user's own `tasks.py` imported it in
    place of ours, then said that `textchem_demo` was not registered, naming ours as the registered ones."""
    (tmp_path / "tasks.py").write_text("import seqio  # a user's own tasks module, registering nothing of ours\n")
    result = subprocess.run([sys.executable, "-m", "textchem_jax.inspect", "--list"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"`import tasks` found {tmp_path / 'tasks.py'}, not textchem_jax's tasks" in result.stderr, result.stderr
    assert "Rename yours" in result.stderr and "Traceback" not in result.stderr


def test_tfds_style_slices_of_a_split_read_those_rows_and_other_slices_name_the_forms_that_work():
    """T5X recipes evaluate on `validation[:N]`; our tasks read only `[:P%]` ("textchem-eval: no task of
    textchem_paragraph2actions has a split 'validation[:4]' ... its splits are test, train, validation"), while the
    start-up check let any bracketed name of a split through to fail inside SeqIO."""
    import math

    from helpers import LENGTHS, tiny_t5

    from textchem_jax import run_config
    from textchem_jax.evaluator import eval_tasks

    name = "textchem_demo_paragraph2actions"
    task = seqio.get_mixture_or_task(name)
    whole = [example["targets_pretokenized"] for example in _examples(name)]
    tenth, last_tenth = math.ceil(len(whole) / 10), math.ceil(len(whole) * 9 / 10)
    slices = {"validation[:4]": whole[:4], "validation[2:5]": whole[2:5], "validation[-3:]": whole[-3:],
              "validation[:10%]": whole[:tenth], "validation[10%:]": whole[tenth:],
              "validation[-10%:]": whole[last_tenth:]}
    for split, expected in slices.items():
        assert split in task.splits and eval_tasks(name, split) == [task]
        assert run_config.check_splits({"infer_eval": run_config.DatasetConfig(name, LENGTHS, split, 4)}) == []
        assert [example["targets_pretokenized"] for example in _examples(name, split)] == expected, split
    assert len(whole) > 10 and slices["validation[:10%]"] + slices["validation[10%:]"] == whole
    for split in ("validation[:4]+test[:4]", "validation[:4x]", "validation[:150%]", "validation[4]",
                  "validation[2:50%]"):  # TFDS reads mixed bounds all as percent; we read 2 as a row
        assert split not in task.splits
        said = re.escape(f"{name} (run_config.DatasetConfig.split): split '{split}': ")
        forms = said + r".*; write one of NAME\[:N\], "
        with pytest.raises(ValueError, match="^" + forms):
            run_config.check_splits({"infer_eval": run_config.DatasetConfig(name, LENGTHS, split, 4)})
        with pytest.raises(ValueError, match="^" + forms):  # textchem-eval and textchem-infer: said before any work
            run_config.checked_provider(run_config.DatasetConfig(name, LENGTHS, split, 4), tiny_t5())


def _user_data(folder, splits=("train", "validation")) -> str:
    """A user's data folder: ChEBI-20 files of three molecules, and USPTO-50K's `train.csv` only."""
    (folder / "chebi20").mkdir(parents=True)
    rows = "".join(f"{i}\t{smiles}\tThe molecule is {name}.\n" for i, (smiles, name) in enumerate(
        [("c1ccccc1", "benzene"), ("CCO", "ethanol"), ("CC(=O)O", "acetic acid")]))  # fmt: skip
    for split in splits:
        (folder / "chebi20" / f"{split}.txt").write_text("CID\tSMILES\tText\n" + rows)
    (folder / "uspto50k").mkdir()
    (folder / "uspto50k" / "train.csv").write_text("class,id,rxn_smiles\n1,US1,CC(=O)O.OCC>>CCOC(C)=O\n")
    return str(folder)


def _unregister(*names: str) -> None:
    from textchem_jax.data import seqio_tasks

    for name in names:
        for registry in (seqio.MixtureRegistry, seqio.TaskRegistry):
            if name in registry.names():
                registry.remove(name)
        seqio_tasks.SPECS.pop(name, None)
        seqio_tasks.MIXTURE_SPECS.pop(name, None)


def test_register_task_takes_a_folder_as_a_path_and_refuses_what_it_cannot_read_naming_the_argument(tmp_path):
    """A folder given as a string (the README's natural reading) was `'str' object is not callable` 50 lines into
    a traceback at the first read, a task `retrosynthesis` a bare `KeyError`. A refused duplicate of one of our
    names replaced our task's spec."""
    import pathlib

    from etils import epath

    from textchem_jax.data import seqio_tasks

    folder = _user_data(tmp_path / "data")
    try:
        for name, directory in (("users_str_t2m", folder), ("users_path_t2m", pathlib.Path(folder)),
                                ("users_epath_t2m", epath.Path(folder)), ("users_fn_t2m", lambda: folder)):  # fmt: skip
            seqio_tasks.register_task(name, "text2mol", directory)
            assert [e["targets_pretokenized"] for e in _examples(name)] == [b"c1ccccc1", b"CCO", b"CC(=O)O"], name
        for task, directory, options, said in [
            ("retrosynthesis", folder, {}, "unknown task 'retrosynthesis'; use one of forward, retro, "
                                           "paragraph2actions, text2mol, mol2text"),
            ("retro", 5, {}, r"the directory must be a folder \(a str or a path\) or a function returning one, got 5 "
                             r"\(int\)"),
            ("retro", folder, {"reactions": "uspto-50k"},
             "unknown reactions 'uspto-50k'; use one of uspto_mit, uspto50k"),
            ("retro", folder, {"source": "GT4SD"}, "unknown source 'GT4SD'; use one of files, gt4sd"),
        ]:  # fmt: skip
            with pytest.raises(ValueError, match=rf"^register_task\('users_wrong'\): {said}$"):
                seqio_tasks.register_task("users_wrong", task, directory, **options)
            assert "users_wrong" not in seqio.TaskRegistry.names()
        ours = seqio_tasks.SPECS["textchem_demo_retro"]
        with pytest.raises(ValueError, match="duplicate"):
            seqio_tasks.register_task("textchem_demo_retro", "retro", folder)
        assert seqio_tasks.SPECS["textchem_demo_retro"] is ours
    finally:
        _unregister("users_str_t2m", "users_path_t2m", "users_epath_t2m", "users_fn_t2m", "users_wrong")


def test_register_mixture_refuses_a_negative_or_not_finite_rate_and_all_zero_rates():
    """`("textchem_demo_forward", -1.0)` was taken: textchem-inspect then divided by zero and training read it as 0,
    that task never seen. A mixture registered straight through SeqIO with such rates is one inspect error."""
    from textchem_jax.data import seqio_tasks

    try:
        names = ("textchem_demo_forward", "textchem_demo_retro")
        for rates, said in [((-1.0, 1.0), r"task textchem_demo_forward has the rate -1\.0; give each task a finite"),
                            ((float("nan"), 1.0), r"task textchem_demo_forward has the rate nan; give each task"),
                            ((1.0, float("inf")), r"task textchem_demo_retro has the rate inf; give each task"),
                            ((0, 0.0), r"every task's rate is 0, so training would sample nothing")]:  # fmt: skip
            with pytest.raises(ValueError, match=rf"^register_mixture\('users_rates_mix'\): {said}"):
                seqio_tasks.register_mixture("users_rates_mix", list(zip(names, rates)))
            assert "users_rates_mix" not in {*seqio.MixtureRegistry.names(), *seqio_tasks.MIXTURE_SPECS}
        with pytest.raises(ValueError, match=r"every task's rate is 0"):  # a task named twice: still all 0
            seqio_tasks.register_mixture("users_rates_mix", [(names[0], 0), (names[0], 0.0), (names[1], 0)])
        forward = seqio.get_mixture_or_task(names[0])  # a Task object: kept by name, for `use_vocabulary`
        seqio_tasks.register_mixture("users_rates_mix", [(forward, 0.0), (names[1], 1)])
        assert seqio_tasks.MIXTURE_SPECS["users_rates_mix"] == [(names[0], 0.0), (names[1], 1)]
        seqio.MixtureRegistry.add("users_seqio_rates_mix", list(zip(names, (-1.0, 1.0))))
        with pytest.raises(ValueError, match=r"^mixture users_seqio_rates_mix: the rates .* must each be >= 0, one > "):
            inspect_lib.inspect("users_seqio_rates_mix", "validation", {"inputs": 64, "targets": 64}, 1, 5)
    finally:
        _unregister("users_rates_mix", "users_seqio_rates_mix")


def test_a_task_without_a_splits_files_is_left_out_of_its_mixtures_evaluation_not_the_mixture(tmp_path, capsys):
    """A user's task with only `uspto50k/train.csv` listed every split: mixed with one of ours, the whole mixture's
    teacher-forced and inference evaluation was off (`uspto50k split 'validation' not found`), ours not evaluated
    either. A folder with none of a task's files keeps every split, so reading names the files it expects; 'train'
    is always kept."""
    from helpers import LENGTHS

    from textchem_jax import run_config
    from textchem_jax.data import seqio_tasks
    from textchem_jax.evaluator import eval_tasks

    folder = _user_data(tmp_path / "data", splits=("validation",))
    try:
        seqio_tasks.register_task("users_train_only_retro", "retro", folder)
        seqio_tasks.register_task("users_validation_only_t2m", "text2mol", folder)
        seqio_tasks.register_task("users_nothing_fwd", "forward", str(tmp_path / "mistyped"))
        seqio_tasks.register_mixture("users_split_mix", [("users_train_only_retro", 1), ("textchem_demo_forward", 1)])
        retro = seqio.get_mixture_or_task("users_train_only_retro")
        assert tuple(retro.splits) == ("train",) and "train[:50%]" in retro.splits
        assert "validation[:4]" not in retro.splits
        # 'train' is listed without its files: a mixture does not train on its other tasks alone, reading says why
        assert tuple(seqio.get_mixture_or_task("users_validation_only_t2m").splits) == ("train", "validation")
        assert tuple(seqio.get_mixture_or_task("users_nothing_fwd").splits) == datasets.SPLITS
        with pytest.raises(FileNotFoundError, match=r"uspto_mit split 'validation' not found: expected \S*/mistyped/"):
            _examples("users_nothing_fwd")
        cfg = run_config.DatasetConfig("users_split_mix", LENGTHS, "validation", 2)
        assert run_config.training_eval_names(cfg) == ["textchem_demo_forward", "users_split_mix"]
        assert [task.name for task in eval_tasks("users_split_mix", "validation")] == ["textchem_demo_forward"]
        assert run_config.check_splits({"infer_eval": cfg}) == [
            "mixture users_split_mix: task users_train_only_retro has no 'validation' split (its splits: train), so "
            "infer_eval/ reads the mixture's other tasks only"]  # fmt: skip
        assert inspect_main(["--mixture=users_split_mix", "--max_examples=5", "--num_examples=0"]) == 0
        out = capsys.readouterr().out
        assert "task users_train_only_retro has no 'validation' split (its splits: train): left out" in out
        assert re.search(r"textchem_demo_forward +inputs +5 ", out) and not re.search(r"users_train_only_retro +i", out)
        assert inspect_main(["--task=users_train_only_retro", "--split=test"]) == 2
        said = "task users_train_only_retro has no split 'test' (its splits: train); give --split one of them"
        assert said in capsys.readouterr().err
    finally:
        _unregister("users_split_mix", "users_train_only_retro", "users_validation_only_t2m", "users_nothing_fwd")


def test_a_tasks_messages_name_the_registered_task_and_an_empty_slice_says_so(tmp_path, caplog):
    """`task retro: split 'validation[100:]' ... has no valid examples` listed the 40 rows read, none skipped, as if
    the data were at fault; skip warnings named the task family (`task retro, split train`), not the user's task."""
    from textchem_jax.data import seqio_tasks

    folder = tmp_path / "data"
    (folder / "chebi20").mkdir(parents=True)
    (folder / "chebi20" / "validation.txt").write_text(  # the last row has no description: skipped, and said
        "CID\tSMILES\tdescription\n1\tCCO\tThe molecule is ethanol.\n2\tCCC\tThe molecule is propane.\n"
        "3\tCCN\tThe molecule is ethylamine.\n4\tCCCl\n")  # fmt: skip
    try:
        seqio_tasks.register_task("users_named_t2m", "text2mol", lambda: str(folder))
        with caplog.at_level(logging.WARNING, logger="textchem_jax.data"):
            assert len(_examples("users_named_t2m", "validation[1:]")) == 2
        assert [r.getMessage().splitlines()[0] for r in caplog.records if "skipped" in r.getMessage()] == [
            "task users_named_t2m, split validation[1:] (2 of the split's 3 rows): rows skipped or kept with a fault "
            "in the whole file, not only in the slice (textchem-inspect lists them all):"]  # fmt: skip
        with pytest.raises(ValueError, match=r"^users_named_t2m: the slice \[100:\] of validation's 3 rows keeps none"):
            _examples("users_named_t2m", "validation[100:]")
        (folder / "chebi20" / "validation.txt").write_text("CID\tSMILES\tdescription\n1\tCCO\n")
        with pytest.raises(ValueError, match=r"^task users_named_t2m: split 'validation\[1:\]' in \S+ has no valid"):
            _examples("users_named_t2m", "validation[1:]")
    finally:
        _unregister("users_named_t2m")



def test_a_slices_skip_report_says_its_faults_are_the_whole_files(tmp_path, caplog):
    """`validation[:3]` of a file whose unreadable reactions are all past its third row warned "10 rows read, 2
    unreadable kept (they count as misses)" with their lines, as if among the 3 rows evaluated (USPTO-MIT `test[:6]`:
    lines 689, 1552, ...); the whole split still reports its faults plainly."""
    from textchem_jax.data import seqio_tasks

    readable, pentavalent = "CCO.CC(=O)O>>CCOC(C)=O 1-2-1.0\n", "CC(C)(C)(C)(C)C.O>>CCO 1-2-1.0\n"
    for folder in (tmp_path / "sliced", tmp_path / "whole"):  # each file's report is said once per process
        (folder / "uspto_mit").mkdir(parents=True)
        (folder / "uspto_mit" / "valid.txt").write_text(readable * 7 + pentavalent + readable + pentavalent)
    try:
        seqio_tasks.register_task("users_sliced_fwd", "forward", str(tmp_path / "sliced"))
        seqio_tasks.register_task("users_whole_fwd", "forward", str(tmp_path / "whole"))
        with caplog.at_level(logging.WARNING, logger="textchem_jax.data"):
            assert len(_examples("users_sliced_fwd", "validation[:3]")) == 3
        said = [r.getMessage().splitlines() for r in caplog.records if "with a fault" in r.getMessage()]
        assert [lines[0] for lines in said] == [
            "task users_sliced_fwd, split validation[:3] (3 of the split's 10 rows): rows skipped or kept with a "
            "fault in the whole file, not only in the slice (textchem-inspect lists them all):"]  # fmt: skip
        assert said[0][1].endswith("valid.txt: 10 rows read, 2 unreadable kept (they count as misses), 0 skipped")
        assert [line.split(":")[0].strip() for line in said[0][2:]] == ["line 8 (kept)", "line 10 (kept)"]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="textchem_jax.data"):
            assert len(_examples("users_whole_fwd", "validation")) == 10
        assert [r.getMessage().splitlines()[0] for r in caplog.records if "with a fault" in r.getMessage()] == [
            "task users_whole_fwd, split validation: rows skipped or kept with a fault (textchem-inspect lists them "
            "all):"]
    finally:
        _unregister("users_sliced_fwd", "users_whole_fwd")

def test_inspect_takes_every_split_expression_training_reads(capsys):
    """`--split=train[:50%]` was refused by argparse's choices, though training and evaluation read it; a slice they
    cannot read is refused with the forms they can."""
    assert inspect_main(["--task=textchem_demo_forward", "--split=validation[:50%]", "--max_examples=500",
                         "--num_examples=0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    half = math.ceil(len(_examples("textchem_demo_forward")) / 2)
    assert "== textchem_demo_forward (validation[:50%]) ==" in out
    assert re.search(rf"textchem_demo_forward +inputs +{half} ", out), out
    with pytest.raises(SystemExit):
        inspect_main(["--task=textchem_demo_forward", "--split=validation[:4x]"])
    assert "split 'validation[:4x]': not a slice this data can read; write one of NAME[:N]" in capsys.readouterr().err
