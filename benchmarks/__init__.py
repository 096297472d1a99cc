"""The performance benchmarks of issue 6: ``python -m benchmarks`` (``make bench``).

Every figure is measured side by side in one run on one machine (a ratio between two systems run
minutes apart on the same broker), because the machines we run on are shared and absolute figures
move by tens of percent from one run to the next. Nothing here asserts performance; the run
prints a table and writes ``docs/benchmarks.md``.
"""
