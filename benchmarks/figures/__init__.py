"""The figures of benchmarks/run.py, one module each (figure 0 is benchmarks/grid_floor.py).

Each module has a docstring saying what its figure measures, `measure(ctx) -> dict` (ctx: a
benchmarks.common.Context; the dict is the section's JSON) and `rows(s, table)`, which adds the
section's lines to the table (s: the section's dict, {} when not run). Optional: NEEDS, the
sections whose results `measure` reads (run before it, even when not asked for).
Adding a figure: a module here and one entry in benchmarks/run.py's REGISTRY.
"""
