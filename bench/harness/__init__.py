"""The benchmark harness behind bench/bench.py (see its docstring)."""
