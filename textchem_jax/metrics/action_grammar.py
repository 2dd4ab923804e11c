"""A parser for the readable action language of paragraph2actions (Vaucher et al. 2020).

An action sequence is `ACTION details; ACTION details.`: actions separated by `; `, the whole ended by a
period. Each action is an upper-case name from `ACTIONS`, followed by details whose shape depends on the action
(`ADD material (amounts) dropwise at T under gas`, `STIR for 2 h at rt`, `COLLECTLAYER organic`, `FILTER keep
filtrate`, `WASH with water 3 x`, `MAKESOLUTION with A and B`, ...). A prediction is valid when it parses;
`parse_actions` says why it does not.

What parses is what the reference's reader (paragraph2actions' `ReadableConverter.string_to_actions`, which its
`action_string_validity` counts) accepts, quirks included, so that `validity` is the reference's number:
- the final period may be missing (a decode cut short at its length limit still reads);
- an action's details are read from the end: each optional part (` under gas`, ` at T`, ` for 2 h`, ...) is
  split off at the first place its word occurs in what is left, and after all of them only the action's
  leading part (`ADD material`, `WASH with material`, or the bare name) may remain;
- `MAKESOLUTION` and `PARTITION` list their materials joined by ` and ` (at least two; exactly two), and the
  reference finds them by deleting every `MAKESOLUTION with ` / `PARTITION with ` it sees, so a missing `with`
  still reads;
- a few details are required: `WAIT for`, `SETTEMPERATURE T`, `INVALIDACTION error`, the material of `ADD`,
  `EXTRACT`, `PH`, `QUENCH`, `RECRYSTALLIZE`, `TRITURATE`, `WASH` and `YIELD`; `COLLECTLAYER` keeps `organic`
  or `aqueous`, `FILTER` keeps `filtrate` or `precipitate`.
A text with no action at all (`""` or `"."`) is an empty list to the reference and counts as valid in its
metric (`valid_prediction`); `parse_actions` refuses it, as it names no action.
"""

from __future__ import annotations

import dataclasses
import re

SEPARATOR = "; "
END = "."
_SEPARATOR_INSIDE = ";\u200c "  # how the reference writes a "; " inside a detail (a zero-width non-joiner)


@dataclasses.dataclass(frozen=True)
class _Part:
    """An optional trailing part of an action: ` word value` (`word` None: ` value`), a flag (` word`, no
    value), or the repetitions ` 3 x`. `required`: the action is invalid without it; `choices`: its values."""

    key: str
    word: str | None = None
    kind: str = "text"  # "text", "flag" or "times"
    required: bool = False
    choices: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Form:
    """How an action's details read. `lead`: the word before the action's one material (`WASH with water`; ""
    for `ADD water`), None where it has none; `parts`: the trailing parts as written, left to right (read from
    the right); `materials`: (key, fewest, most) of a ` and `-joined list (MAKESOLUTION, PARTITION)."""

    lead: str | None = None
    material: str = "material"
    parts: tuple[_Part, ...] = ()
    materials: tuple[str, int, int | None] | None = None


_DURATION, _TEMPERATURE, _ATMOSPHERE = _Part("duration", "for"), _Part("temperature", "at"), _Part("atmosphere", "under")
_DROPWISE = _Part("dropwise", "dropwise", kind="flag")
_REPETITIONS = _Part("repetitions", kind="times")

_FORMS = {
    "ADD": _Form(lead="", parts=(_DROPWISE, _TEMPERATURE, _ATMOSPHERE, _Part("duration", "over"))),
    "COLLECTLAYER": _Form(parts=(_Part("layer", required=True, choices=("aqueous", "organic")),)),
    "CONCENTRATE": _Form(),
    "DEGAS": _Form(parts=(_Part("gas", "with"), _DURATION)),
    "DRYSOLID": _Form(parts=(_DURATION, _TEMPERATURE, _ATMOSPHERE)),
    "DRYSOLUTION": _Form(parts=(_Part("agent", "over"),)),
    "EXTRACT": _Form(lead="with", material="solvent", parts=(_REPETITIONS,)),
    "FILTER": _Form(parts=(_Part("keep", "keep", choices=("filtrate", "precipitate")),)),
    "FOLLOWOTHERPROCEDURE": _Form(),
    "INVALIDACTION": _Form(parts=(_Part("error", required=True),)),
    "MAKESOLUTION": _Form(materials=("materials", 2, None)),
    "MICROWAVE": _Form(parts=(_DURATION, _TEMPERATURE)),
    "NOACTION": _Form(),
    "OTHERLANGUAGE": _Form(),
    "PARTITION": _Form(materials=("materials", 2, 2)),
    "PH": _Form(lead="with", parts=(_Part("ph", "to pH"), _DROPWISE, _TEMPERATURE)),
    "PHASESEPARATION": _Form(),
    "PURIFY": _Form(),
    "QUENCH": _Form(lead="with", parts=(_DROPWISE, _TEMPERATURE)),
    "RECRYSTALLIZE": _Form(lead="from", material="solvent"),
    "REFLUX": _Form(parts=(_DURATION, _ATMOSPHERE, _Part("dean_stark", "with Dean-Stark apparatus", kind="flag"))),
    "SETTEMPERATURE": _Form(parts=(_Part("temperature", required=True),)),
    "SONICATE": _Form(parts=(_DURATION, _TEMPERATURE)),
    "STIR": _Form(parts=(_DURATION, _TEMPERATURE, _ATMOSPHERE)),
    "TRITURATE": _Form(lead="with", material="solvent"),
    "WAIT": _Form(parts=(_Part("duration", "for", required=True), _TEMPERATURE)),
    "WASH": _Form(lead="with", parts=(_REPETITIONS,)),
    "YIELD": _Form(lead=""),
}
ACTIONS = frozenset(_FORMS)
_TIMES = re.compile(r" (\d+) x$")  # `$` as the reference's: also before a final newline (then it does not read)


@dataclasses.dataclass(frozen=True)
class Action:
    name: str
    details: dict[str, str]


class ActionSyntaxError(ValueError):
    """An action sequence that does not parse; the message names the action and the problem."""


def _take_part(rest: str, part: _Part) -> tuple[str, str | None]:
    """(what is left, the part's value or None) with `part` read off the end of `rest`."""
    if part.kind == "flag":
        ending = f" {part.word}"
        return (rest[: -len(ending)], part.word) if rest.endswith(ending) else (rest, None)
    if part.kind == "times":
        found = _TIMES.search(rest)
        if found is None:
            return rest, None
        if not rest.endswith(found.group(0)):
            raise ValueError("repetitions before a line break")
        return rest[: found.start()], found.group(1)
    marker = f" {part.word} " if part.word else " "
    before, found, after = rest.partition(marker)  # the first occurrence: what follows it is the value
    return (before, after) if found else (rest, None)


def _details(name: str, text: str) -> dict[str, str]:
    """The details of one action written as `text` (name included); raises ValueError saying what is wrong."""
    form = _FORMS[name]
    if form.materials is not None:
        key, fewest, most = form.materials
        materials = text.replace(f"{name} with ", "").split(" and ")
        if len(materials) < fewest or (most is not None and len(materials) > most):
            wanted = f"{fewest}" if fewest == most else f"at least {fewest}"
            raise ValueError(f"{len(materials)} material(s) joined by ' and ', {wanted} wanted")
        return {key: " and ".join(materials)}
    details, rest = {}, text
    for part in reversed(form.parts):
        rest, value = _take_part(rest, part)
        if value is None and part.required:
            raise ValueError(f"no {part.key}")
        if value is not None and part.choices and value not in part.choices:
            raise ValueError(f"{part.key} {value!r} is none of {', '.join(part.choices)}")
        if value is not None:
            details[part.key] = value
    if form.lead is not None:
        opening = f"{name} {form.lead} " if form.lead else f"{name} "
        if not rest.startswith(opening):
            raise ValueError(f"expected {opening!r} and the {form.material}")
        details[form.material] = rest[len(opening) :]
    elif rest != name:
        raise ValueError(f"{rest.removeprefix(name).strip()!r} is no detail of {name}")
    return dict(reversed(details.items()))  # in the order written


def parse_actions(text: str) -> list[Action]:
    """Parses an action sequence; raises ActionSyntaxError saying which action is malformed."""
    if not isinstance(text, str):
        raise ActionSyntaxError(f"not a string: {type(text).__name__}")
    body = text.removesuffix(END)
    if not body:
        raise ActionSyntaxError("empty action sequence: no action")
    actions = []
    for position, chunk in enumerate(body.split(SEPARATOR), start=1):
        chunk = chunk.replace(_SEPARATOR_INSIDE, SEPARATOR)
        name = chunk.split(" ", 1)[0]
        if name not in ACTIONS:
            raise ActionSyntaxError(f"action {position} ({chunk!r}): unknown action {name!r}")
        try:
            details = _details(name, chunk)
        except ValueError as error:
            raise ActionSyntaxError(f"action {position} ({chunk!r}): details do not fit {name}: {error}") from None
        actions.append(Action(name, details))
    return actions


def is_valid_action_sequence(text: str) -> bool:
    """Whether `text` parses into at least one action."""
    try:
        parse_actions(text)
    except ActionSyntaxError:
        return False
    return True


def valid_prediction(text: str) -> bool:
    """paragraph2actions' `validity` of one prediction: it parses, or it holds no action at all (`""`, `"."`),
    which the reference reads as an empty list of actions and counts as valid."""
    return text in ("", END) or is_valid_action_sequence(text)
