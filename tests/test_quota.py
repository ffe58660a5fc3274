"""The daily quota: the run's request budget, the ledger's requests per account and day, the
plan before sending, the refusal, ``--within-quota``, and ``dmimport runs``."""

from __future__ import annotations

import multiprocessing as mp

from importer.send.budget import RequestBudget


def _take_all(shared: object, n: int, out: object) -> None:
    budget = RequestBudget(shared=shared)
    took = sum(budget.take() for _ in range(n))
    out.value = took  # type: ignore[attr-defined]


def test_a_budget_says_no_once_spent_and_counts_only_what_it_allowed() -> None:
    budget = RequestBudget(3)
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
    assert (budget.used, budget.left, budget.exhausted) == (3, 0, True)
    budget.limit = 4  # a new quota day, or the ledger says less was used
    assert budget.take() and not budget.take()
    assert (budget.used, budget.left) == (4, 0)


def test_an_unlimited_budget_only_counts() -> None:
    budget = RequestBudget(None)
    assert all(budget.take() for _ in range(1000))
    assert (budget.used, budget.left, budget.limit, budget.exhausted) == (1000, None, None, False)


def test_a_budget_is_shared_by_spawned_children() -> None:
    ctx = mp.get_context("spawn")
    budget = RequestBudget(50)
    assert budget.take()  # counted before sharing: kept
    shared = budget.share(ctx)
    outs = [ctx.Value("q", 0) for _ in range(3)]
    procs = [ctx.Process(target=_take_all, args=(shared, 30, out)) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sum(o.value for o in outs) == 49  # 90 asked, 49 left after the parent's one
    assert (budget.used, budget.left, budget.exhausted) == (50, 0, True)
