"""Round-robin selection across clusters: the draw that keeps small clusters from being drowned by big ones."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def round_robin(labels: np.ndarray, distances: np.ndarray, grade_rank: np.ndarray, target: int) -> list[int]:
    """Indices of up to `target` rows, in the order they were drawn.

    Within a cluster, rows are taken better grade first, then nearest to the centroid first. Each round takes
    the next row of every cluster that has one left; when the target cuts a round short, the round's rows with
    the better (grade, distance) go first."""
    members: dict[int, list[int]] = defaultdict(list)
    for i in np.lexsort((distances, grade_rank)):  # sorted by grade, then distance
        members[int(labels[i])].append(int(i))
    picked: list[int] = []
    depth = 0
    while len(picked) < target:
        this_round = [rows[depth] for rows in members.values() if depth < len(rows)]
        if not this_round:
            break
        this_round.sort(key=lambda i: (grade_rank[i], distances[i]))
        picked += this_round[:target - len(picked)]
        depth += 1
    return picked
