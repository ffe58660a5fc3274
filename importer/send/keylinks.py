"""Which primary-key values name one customer in a run (per-customer order across keys)."""

from __future__ import annotations


class KeyLinks:
    """Which primary-key values belong to one customer in this run: a union-find over them.

    ``tokens(keys)`` is called once per row, in file order, and returns what the row is
    ordered on: one token per customer (component) its values belonged to before this row,
    the first of them being the customer's token from now on. A row that links two customers
    so carries both tokens and waits for the earlier rows of each; every later row of the
    merged customer carries the first and waits for it. A value seen alone, or always with the
    same partners, costs no memory; each link costs one dict entry (about 130 bytes), so a
    run holds one entry per customer known by several values.

    Tokens are the values' ``hash()`` (process-local, so they never leave the process that
    computed them except as opaque tokens): two values with the same hash are ordered as one
    customer, which costs a little parallelism and never reorders anything.
    """

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}

    def _find(self, x: int) -> int:
        parent = self._parent
        root = x
        while (p := parent.get(root)) is not None:
            root = p
        while (p := parent.get(x)) is not None and p != root:
            parent[x] = root  # path compression
            x = p
        return root

    def tokens(self, keys: tuple[str, ...]) -> tuple[int, ...]:
        if not self._parent:  # nothing linked yet: the values are their own customers
            if len(keys) == 1:
                return (hash(keys[0]),)
            first = hash(keys[0])
            roots = [first]
            for k in keys[1:]:
                h = hash(k)
                if h not in roots:
                    roots.append(h)
        else:
            roots = []
            for k in keys:
                r = self._find(hash(k))
                if r not in roots:
                    roots.append(r)
        first = roots[0]
        for r in roots[1:]:
            self._parent[r] = first
        return tuple(roots)
