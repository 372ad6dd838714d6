"""Fuzzing: property-based (hypothesis), schema-based (schemathesis) and, in
scripts/fuzz_atheris.py, coverage-guided (atheris). Cases per target: $MOBIEYE_FUZZ_CASES."""
