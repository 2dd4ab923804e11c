"""A parser for the readable action language of paragraph2actions (Vaucher et al. 2020).

An action sequence is `ACTION details; ACTION details.`: actions separated by `; `, the whole ended
by a period. Each action is an upper-case name from `ACTIONS`, followed by details whose shape
depends on the action (`ADD material (amounts) dropwise at T under gas`, `STIR for 2 h at rt`,
`COLLECTLAYER organic`, `FILTER keep filtrate`, `WASH with water 3 x`, ...). A prediction is valid
when it parses; `parse_actions` says why it does not.
"""

from __future__ import annotations

import dataclasses
import re

_DURATION = r"(?: for (?P<duration>.+?))?"
_TEMPERATURE = r"(?: at (?P<temperature>.+?))?"
_ATMOSPHERE = r"(?: under (?P<atmosphere>.+?))?"
_CONDITIONS = _DURATION + _TEMPERATURE + _ATMOSPHERE
_REPETITIONS = r"(?: (?P<repetitions>\d+) x)?"
_NOTHING = r""

# Action name -> regular expression for the details (matched in full, after one space if any).
_DETAILS = {
    "ADD": r" (?P<material>.+?)(?P<dropwise> dropwise)?" + _TEMPERATURE + _ATMOSPHERE,
    "COLLECTLAYER": r" (?P<layer>organic|aqueous)",
    "CONCENTRATE": _NOTHING,
    "DEGAS": r"(?: with (?P<gas>.+?))?" + _DURATION,
    "DRYSOLID": _CONDITIONS,
    "DRYSOLUTION": r"(?: over (?P<agent>.+))?",
    "EXTRACT": r" with (?P<solvent>.+?)" + _REPETITIONS,
    "FILTER": r"(?: keep (?P<keep>filtrate|precipitate))?",
    "FOLLOWOTHERPROCEDURE": _NOTHING,
    "INVALIDACTION": r"(?: (?P<error>.+))?",
    "MAKESOLUTION": r" with (?P<materials>.+?)",
    "MICROWAVE": _CONDITIONS,
    "NOACTION": _NOTHING,
    "OTHERLANGUAGE": _NOTHING,
    "PARTITION": r" with (?P<first>.+?) and (?P<second>.+?)",
    "PH": r"(?: with (?P<material>.+?))?(?: to pH (?P<ph>.+?))?(?P<dropwise> dropwise)?" + _TEMPERATURE,
    "PHASESEPARATION": _NOTHING,
    "PURIFY": _NOTHING,
    "QUENCH": r" with (?P<material>.+?)(?P<dropwise> dropwise)?" + _TEMPERATURE,
    "RECRYSTALLIZE": r"(?: from (?P<solvent>.+?))?",
    "REFLUX": _DURATION + _ATMOSPHERE,
    "SETTEMPERATURE": r" (?P<temperature>.+?)",
    "SONICATE": _DURATION + _TEMPERATURE,
    "STIR": _CONDITIONS,
    "TRITURATE": r" with (?P<solvent>.+?)",
    "WAIT": _DURATION + _TEMPERATURE + _ATMOSPHERE,
    "WASH": r" with (?P<material>.+?)" + _REPETITIONS,
    "YIELD": r" (?P<material>.+?)",
}
ACTIONS = frozenset(_DETAILS)
_COMPILED = {name: re.compile(details) for name, details in _DETAILS.items()}


@dataclasses.dataclass(frozen=True)
class Action:
    name: str
    details: dict[str, str]


class ActionSyntaxError(ValueError):
    """An action sequence that does not parse; the message names the action and the problem."""


def parse_actions(text: str) -> list[Action]:
    """Parses an action sequence; raises ActionSyntaxError saying which action is malformed."""
    if not isinstance(text, str):
        raise ActionSyntaxError(f"not a string: {type(text).__name__}")
    text = text.strip()
    if not text:
        raise ActionSyntaxError("empty action sequence")
    if not text.endswith("."):
        raise ActionSyntaxError("an action sequence ends with '.'")
    actions = []
    for position, chunk in enumerate(text[:-1].split("; "), start=1):
        name, _, rest = chunk.partition(" ")
        if name not in ACTIONS:
            raise ActionSyntaxError(f"action {position} ({chunk!r}): unknown action {name!r}")
        match = _COMPILED[name].fullmatch(" " + rest if rest else "")
        if match is None:
            raise ActionSyntaxError(f"action {position} ({chunk!r}): details do not fit {name}")
        details = {key: value.strip() for key, value in match.groupdict().items() if value}
        actions.append(Action(name, details))
    return actions


def is_valid_action_sequence(text: str) -> bool:
    try:
        parse_actions(text)
    except ActionSyntaxError:
        return False
    return True
