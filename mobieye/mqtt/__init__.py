"""MQTT transport: a resilient client link (``client``), broker addresses and checks
(``connection``, ``preflight``) and brokers for tests and the demo (``broker``).

What goes over it (topics, payloads) is the fleet's: ``mobieye.fleet``. Import from the
modules; this package re-exports nothing (no import cycles through it).
"""
