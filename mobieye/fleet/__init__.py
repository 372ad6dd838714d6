"""The fleet over MQTT: topic names (``topics``), payload models (``payloads``), a worker's
presence in the fleet (``presence``) and the edge's directory of live workers (``directory``).

The dashboard's store (``mobieye.dashboard.store``) consumes the same topics and payloads. The
MQTT transport itself (a resilient link, brokers for tests and the demo) is ``mobieye.mqtt``.
Import from the modules; this package re-exports nothing (no import cycles through it).
"""
