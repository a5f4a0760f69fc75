"""Round-robin selection across clusters: the draw that keeps small clusters from being drowned by big ones."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def instruction_form(instruction: str) -> str:
    """What kind of request it is, by its first word: "explain", "what", "describe", "write" ... ("in" for "In
    two sentences, ..."). Crude, but it is what makes a set read as 43% "Explain ...": see max_form_share."""
    words = instruction.strip().split()
    return words[0].strip(",.:;?!\"'“”").lower() if words else ""


def round_robin(labels: np.ndarray, distances: np.ndarray, grade_rank: np.ndarray, target: int,
                forms: list[str] | None = None, max_form_share: float = 1.0) -> list[int]:
    """Indices of up to `target` rows, in the order they were drawn.

    Within a cluster, rows are taken better grade first, then nearest to the centroid first. Each round takes
    the next row of every cluster that has one left; when the target cuts a round short, the round's rows with
    the better (grade, distance) go first. With `forms`, no form (instruction_form) takes more than
    `max_form_share` of the target while rows of other forms are left: a row over the cap waits in its cluster
    and is drawn only once the others run out."""
    members: dict[int, list[int]] = defaultdict(list)
    for i in np.lexsort((distances, grade_rank)):  # sorted by grade, then distance
        members[int(labels[i])].append(int(i))
    cap = max(1, int(np.ceil(max_form_share * target))) if forms is not None and max_form_share < 1 else None
    used: dict[str, int] = defaultdict(int)
    picked: list[int] = []
    waiting: list[int] = []  # over the cap, in the order they came up
    while len(picked) < target and any(members.values()):
        this_round = []
        for rows in members.values():
            while rows:
                i = rows.pop(0)
                if cap is not None and used[forms[i]] >= cap:
                    waiting.append(i)
                    continue
                this_round.append(i)
                break
        this_round.sort(key=lambda i: (grade_rank[i], distances[i]))
        for i in this_round:
            if len(picked) >= target:
                break
            if cap is not None and used[forms[i]] >= cap:
                waiting.append(i)
                continue
            picked.append(i)
            if forms is not None:
                used[forms[i]] += 1
    picked += waiting[:max(0, target - len(picked))]
    return picked
