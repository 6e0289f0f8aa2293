"""Owns the serializability check: a history of committed transactions and its dependency cycles.

Tests record, for every committed transaction, which version of each key it read and which
keys it overwrote (each write installs a version named by the writing transaction and names
the version it replaced). ``History.anomalies()`` then builds the dependency graph, as Elle
does for register histories:

* ``wr``: T1 wrote the version T2 read, so T1 comes before T2;
* ``ww``: T2 overwrote T1's version, so T1 comes before T2;
* ``rw``: T2 read the version T3 overwrote, so T2 comes before T3.

A cycle means no serial order explains what the transactions saw: an anomaly (a lost update
is the smallest: two transactions that read the same version and both overwrote it). Reads of
a version no committed transaction wrote are anomalies too. The history is pure data: record
it from any thread, then check.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

INITIAL = "init"
"""The version every key holds before any recorded transaction wrote it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TxnRecord:
    """One committed transaction and the versions it read and replaced.

    ``reads`` maps a key to the version seen (its writer's id); ``writes`` maps a key to the
    version the transaction replaced.
    """

    id: str
    reads: dict[str, str] = field(default_factory=dict)
    writes: dict[str, str] = field(default_factory=dict)
    where: str = ""
    """Free text for the printed history (which runtime, thread, attempt)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Anomaly:
    """A dependency cycle (or an impossible read), with the transactions involved."""

    kind: str
    """``cycle``, ``unknown_read`` (a version no committed transaction wrote) or
    ``forked_write`` (two transactions replaced the same version of a key)."""
    txns: list[TxnRecord]
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    """(from id, to id, ``wr``/``ww``/``rw`` on key) along a cycle."""

    def describe(self) -> str:
        """The anomaly and the history of the transactions in it, one per line."""
        lines = [f"{self.kind} over {len(self.txns)} transaction(s):"]
        lines += [f"  {a} -{label}-> {b}" for a, b, label in self.edges]
        for t in self.txns:
            lines.append(f"  {t.id} [{t.where}] reads {t.reads} replaces {t.writes}")
        return "\n".join(lines)


class History:
    """The committed transactions of a run; ``add`` is thread-safe."""

    def __init__(self) -> None:
        self.txns: dict[str, TxnRecord] = {}
        self._lock = threading.Lock()

    def add(self, txn: TxnRecord) -> None:
        """Record a committed transaction."""
        with self._lock:
            self.txns[txn.id] = txn

    def graph(self) -> dict[str, dict[str, str]]:
        """The dependency edges: ``graph[a][b]`` is the label of an edge a -> b."""
        edges: dict[str, dict[str, str]] = {t: {} for t in self.txns}
        # Who replaced each version of each key (several: a forked write).
        replaced_by: dict[tuple[str, str], list[str]] = {}
        for t in self.txns.values():
            for key, prev in t.writes.items():
                replaced_by.setdefault((key, prev), []).append(t.id)
                if prev in self.txns:
                    edges[prev].setdefault(t.id, f"ww {key}")
        for t in self.txns.values():
            for key, seen in t.reads.items():
                if seen in self.txns and seen != t.id:
                    edges[seen].setdefault(t.id, f"wr {key}")
                for later in replaced_by.get((key, seen), ()):
                    if later != t.id:
                        edges[t.id].setdefault(later, f"rw {key}")
        return edges

    def anomalies(self) -> list[Anomaly]:
        """Impossible reads, forked writes, and one cycle per strongly connected component."""
        found: list[Anomaly] = []
        for t in self.txns.values():
            for seen in t.reads.values():
                if seen != INITIAL and seen not in self.txns:
                    found.append(Anomaly(kind="unknown_read", txns=[t], edges=[]))
                    break
        forks: dict[tuple[str, str], list[TxnRecord]] = {}
        for t in self.txns.values():
            for key, prev in t.writes.items():
                forks.setdefault((key, prev), []).append(t)
        for group in forks.values():
            if len(group) > 1:
                found.append(Anomaly(kind="forked_write", txns=group))
        graph = self.graph()
        for cycle in _cycles(graph):
            edges = [(a, b, graph[a][b]) for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True)]
            found.append(Anomaly(kind="cycle", txns=[self.txns[i] for i in cycle], edges=edges))
        return found


def _cycles(graph: dict[str, dict[str, str]]) -> Iterable[list[str]]:
    """One cycle from each strongly connected component with more than one node.

    Tarjan's algorithm, iterative; the cycle is found by a search inside the component.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    yield _cycle_in(graph, set(component))


def _cycle_in(graph: dict[str, dict[str, str]], members: set[str]) -> list[str]:
    """A simple cycle through the first member, within a strongly connected component."""
    start = min(members)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in graph[node]:
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if child not in parent:
                    parent[child] = node
                    nxt.append(child)
        frontier = nxt
    return sorted(members)  # pragma: no cover - a strongly connected component has a cycle


__all__ = ["INITIAL", "Anomaly", "History", "TxnRecord"]
