"""dialogs/states.mmd must draw the states the code has, no more and no fewer."""

from __future__ import annotations

import re
from importlib import resources

from dialogs.models import State


def edges() -> list[tuple[str, str]]:
    text = (resources.files("dialogs") / "states.mmd").read_text(encoding="utf-8")
    return re.findall(r"^\s*(\S+)\s*-->\s*(\S+)", text, re.MULTILINE)


def test_the_diagram_names_exactly_the_states_in_the_code() -> None:
    drawn = {name for edge in edges() for name in edge} - {"[*]"}
    assert drawn == {state.value for state in State}


def test_every_state_is_reachable_from_the_start_and_can_get_back_to_idle() -> None:
    graph: dict[str, set[str]] = {}
    for a, b in edges():
        graph.setdefault(a, set()).add(b)
    seen, todo = set(), ["[*]"]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += graph.get(node, set())
    assert seen - {"[*]"} == {state.value for state in State}
    assert all(State.IDLE.value in graph[state.value] for state in State if state is not State.IDLE)
