"""The dmimport benchmark suite: ``make bench`` (``python -m bench``); docs/benchmarks.md.

Every figure is a rate or ratio measured in the same run as its baseline, on data the suite
generates into bench/data/.
"""
