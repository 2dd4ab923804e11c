"""Forward-prediction and retrosynthesis metrics: top-k exact match of canonical molecule sets.

A prediction matches when its canonical component set equals the target's (component order, SMILES
spelling and `~` versus `.` between fragments do not matter). Predictions may be single strings or
lists of beams, best first; with lists, `accuracy_top{k}` is reported for k in 2, 3, 5, 10 up to
the longest list. Retrosynthesis adds round-trip accuracy (Schwaller et al. 2020): a forward model
maps the top-1 predicted precursors back, and the example counts when it recovers the product.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from textchem_jax.chem.smiles import molecule_key
from textchem_jax.metrics._inputs import as_text, check_lengths, is_beams, logger, top1
from textchem_jax.process_pool import start_parallel_map

_REPORTED_K = (2, 3, 5, 10)


def _beams(prediction: object) -> list[str]:
    if is_beams(prediction):
        return [as_text(p) for p in prediction]
    return [as_text(prediction)]


def _molecule_keys(strings: Sequence[str], num_workers: int | None) -> dict[str, str | None]:
    unique = list(dict.fromkeys(strings))
    return dict(zip(unique, start_parallel_map(molecule_key, unique, num_workers)()))


def _top_k_metrics(
    name: str, targets: Sequence[str], predictions: Sequence, num_workers: int | None
) -> tuple[dict[str, float], dict[str, str | None], list[list[str]]]:
    check_lengths(targets, predictions, name)
    if not targets:
        raise ValueError(f"{name}: no examples to score")
    beams = [_beams(p) for p in predictions]
    keys = _molecule_keys([*targets, *(b for bs in beams for b in bs)], num_workers)
    unreadable = sum(keys[t] is None for t in targets)
    if unreadable:
        logger.warning("%s: %d of %d targets do not parse; they count as misses", name, unreadable, len(targets))
    first_hit = []  # rank of the first matching beam, or None
    for target, candidates in zip(targets, beams):
        expected = keys[target]
        ranks = [i for i, c in enumerate(candidates) if expected is not None and keys[c] == expected]
        first_hit.append(ranks[0] if ranks else None)
    n = len(targets)
    results = {"accuracy": sum(rank == 0 for rank in first_hit) / n}
    longest = max(len(b) for b in beams)
    if longest > 1:
        for k in sorted({k for k in _REPORTED_K if 1 < k <= longest} | {longest}):
            results[f"accuracy_top{k}"] = sum(rank is not None and rank < k for rank in first_hit) / n
    results["invalid_rate"] = sum(not b or keys[b[0]] is None for b in beams) / n
    return results, keys, beams


def forward_metrics(targets: Sequence, predictions: Sequence, *, num_workers: int | None = None) -> dict[str, float]:
    """SeqIO metric function for precursors -> product: `accuracy`, `accuracy_top{k}`, `invalid_rate`."""
    check_lengths(targets, predictions, "forward_metrics")  # as given: a string listed first passed as characters
    targets = [as_text(t) for t in targets]
    return _top_k_metrics("forward_metrics", targets, predictions, num_workers)[0]


def retro_metrics(
    targets: Sequence,
    predictions: Sequence,
    *,
    forward_fn: Callable[[list[str]], list[str]] | None = None,
    products: Sequence[str] | None = None,
    num_workers: int | None = None,
) -> dict[str, float]:
    """SeqIO metric function for product -> precursors; adds `roundtrip_accuracy` given `forward_fn`.

    Targets are precursor strings, or mappings `{"target": precursors, "product": product}` (what the
    retrosynthesis target postprocessor returns, so the product reaches the metric inside SeqIO).
    `forward_fn(list_of_precursors) -> list_of_products` is any forward predictor, e.g. the trained
    multi-task model itself; `products` are the retrosynthesis inputs when targets are plain strings.
    """
    check_lengths(targets, predictions, "retro_metrics")
    mappings = sum(isinstance(t, Mapping) for t in targets)
    if 0 < mappings < len(targets):
        raise ValueError(f"retro_metrics: {mappings} of {len(targets)} targets are mappings and the others are not: "
                         "pass all as precursor strings or all as {'target': precursors, 'product': product}")  # fmt: skip
    if mappings:
        products = [as_text(t.get("product")) for t in targets] if products is None else products
        targets = [t.get("target") for t in targets]
    targets = [as_text(t) for t in targets]
    results, keys, beams = _top_k_metrics("retro_metrics", targets, predictions, num_workers)
    if forward_fn is None:
        return results
    if products is None or len(products) != len(targets):
        raise ValueError(
            "retro_metrics: round-trip accuracy needs one product per example: pass products=[...] or "
            "targets as {'target': precursors, 'product': product}"
        )
    products = [as_text(p) for p in products]
    readable = [i for i, b in enumerate(beams) if b and keys[b[0]] is not None]
    outputs = [as_text(top1(o)) for o in forward_fn([beams[i][0] for i in readable])] if readable else []
    if len(outputs) != len(readable):
        raise ValueError(f"retro_metrics: forward_fn returned {len(outputs)} products for {len(readable)} inputs")
    recovered = _molecule_keys([*products, *outputs], num_workers)
    hits = sum(
        recovered[products[i]] is not None and recovered[out] == recovered[products[i]]
        for i, out in zip(readable, outputs)
    )
    results["roundtrip_accuracy"] = hits / len(targets)
    return results
