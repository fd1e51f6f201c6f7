"""Programs the tables run as child processes (`python -m bench.children.NAME` in the checkout), so
that what they measure (RSS, start-up time, imports) is a fresh process's and not the bench's own.

They import no other module of the bench (tests/test_bench.py checks it): a child loads only what the
measured program loads, plus these empty package files.
"""
