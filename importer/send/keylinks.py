"""Which primary-key values name one customer in a run (per-customer order across keys)."""

from __future__ import annotations

from array import array


class KeyLinks:
    """Which primary-key values belong to one customer in this run: a union-find over them.

    ``tokens(keys)`` is called once per row, in file order, and returns what the row is
    ordered on: one token per customer (component) its values belonged to before this row,
    the first of them being the customer's token from now on. A row that links two customers
    so carries both tokens and waits for the earlier rows of each; every later row of the
    merged customer carries the first and waits for it. A value seen alone, or always with the
    same partners, costs no memory; each link costs one entry of an open-addressing table of
    64-bit integers (16 bytes a slot, at most 60% full: under 30 bytes a link, where a dict
    took about 130), so a run holds one entry per customer known by several values.

    Tokens are the values' ``hash()`` (process-local, so they never leave the process that
    computed them except as opaque tokens): two values with the same hash are ordered as one
    customer, which costs a little parallelism and never reorders anything.
    """

    #: an empty slot: ``hash()`` never returns -1
    _EMPTY = -1

    def __init__(self) -> None:
        self._keys = array("q", [self._EMPTY]) * 16
        self._parents = array("q", [0]) * 16
        self._mask = 15
        self._links = 0

    def __len__(self) -> int:
        """The links held (one per customer known by several values)."""
        return self._links

    def _slot(self, x: int) -> int:
        """Where ``x`` is in the table, or the empty slot where it would go."""
        keys, mask = self._keys, self._mask
        i = x & mask
        while True:
            k = keys[i]
            if k == x or k == -1:
                return i
            i = (i + 1) & mask

    def _parent(self, x: int) -> int | None:
        i = self._slot(x)
        return None if self._keys[i] == -1 else self._parents[i]

    def _link(self, x: int, parent: int) -> None:
        i = self._slot(x)
        if self._keys[i] == -1:
            if (self._links + 1) * 5 > len(self._keys) * 3:
                self._grow()
                i = self._slot(x)
            self._keys[i] = x
            self._links += 1
        self._parents[i] = parent

    def _grow(self) -> None:
        keys, parents = self._keys, self._parents
        size = len(keys) * 2
        self._keys = array("q", [self._EMPTY]) * size
        self._parents = array("q", [0]) * size
        self._mask = size - 1
        for k, p in zip(keys, parents, strict=True):
            if k != -1:
                i = self._slot(k)
                self._keys[i] = k
                self._parents[i] = p

    def _find(self, x: int) -> int:
        keys, parents, mask = self._keys, self._parents, self._mask
        root = x
        while True:  # follow the parents (the probe loop inlined: this is per key per row)
            i = root & mask
            while (k := keys[i]) != root and k != -1:
                i = (i + 1) & mask
            if k == -1:
                break
            root = parents[i]
        if root != x:
            while (p := self._parent(x)) is not None and p != root:
                self._link(x, root)  # path compression
                x = p
        return root

    def tokens(self, keys: tuple[str, ...]) -> tuple[int, ...]:
        if not self._links:  # nothing linked yet: the values are their own customers
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
            self._link(r, first)
        return tuple(roots)
