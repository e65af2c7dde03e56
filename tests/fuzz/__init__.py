"""Fuzz targets for every parser that reads outside input, an atheris harness and its runner.

Each module under :mod:`tests.fuzz.targets` is one parser's target: ``seeds()`` gives valid
inputs to start from, ``check(data)`` feeds the parser one input and lets through only an exception
the parser does not document (a bug). The unit tests (tests/unit/test_fuzz_targets.py) run every
target under Hypothesis with a short budget; ``tox -e fuzz`` (``python -m tests.fuzz.run``) runs
each under atheris with a fixed budget (docs/testing.md).
"""
