"""MQTT for the fleet: topic names, payload models, a resilient client link and test brokers."""

from mobieye.mqtt.client import MqttLink
from mobieye.mqtt.connection import BrokerAddress, check_connect, parse_broker_url
from mobieye.mqtt.errors import BrokerError, PayloadError, TopicError
from mobieye.mqtt.payloads import (
    Command,
    ControllerDecision,
    LatencyMs,
    ObjectEvent,
    StreamState,
    StreamStats,
    WorkerState,
    parse_payload,
    worker_will,
)

__all__ = [
    "BrokerAddress",
    "BrokerError",
    "Command",
    "ControllerDecision",
    "LatencyMs",
    "MqttLink",
    "ObjectEvent",
    "PayloadError",
    "StreamState",
    "StreamStats",
    "TopicError",
    "WorkerState",
    "check_connect",
    "parse_broker_url",
    "parse_payload",
    "worker_will",
]
