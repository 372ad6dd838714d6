"""Detector models: the ladder (``ladder``), timing on this machine (``profile``,
``throughput``), export (``export``) and ``mobieye models`` (``cli``).

Import from the modules; this package re-exports nothing.
"""
