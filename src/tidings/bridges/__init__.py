"""Bridges between the bus and the brokers teams already run: MQTT (edge devices) and AMQP
0-9-1 (RabbitMQ, legacy systems).

Each bridge takes a broker's messages onto the bus (acknowledging them only once the event
is accepted) and sends bus topics out to the broker (counting them published only once the
broker confirmed them), speaking the CloudEvents binding of its protocol. See
``docs/bridges.md``.

- :class:`~tidings.bridges.mqtt.MqttBridge` (``pip install 'tidings[mqtt]'``);
- :class:`~tidings.bridges.amqp.AmqpBridge` (``pip install 'tidings[amqp]'``);
- what both share (:mod:`tidings.bridges._common`): :class:`Intake`, :class:`BridgeCounts`,
  the dead-letter topic.

The bridges import their client libraries when first named here, so ``import
tidings.bridges`` works without either extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidings._lazy import lazy_attributes as _lazy_attributes
from tidings.bridges._common import (
    DEAD_LETTER_TOPIC,
    BridgeCounts,
    Intake,
    MalformedMessageError,
    Sink,
)

if TYPE_CHECKING:
    from tidings.bridges.amqp import AmqpBridge
    from tidings.bridges.mqtt import MqttBridge

__all__ = (
    "DEAD_LETTER_TOPIC",
    "AmqpBridge",
    "BridgeCounts",
    "Intake",
    "MalformedMessageError",
    "MqttBridge",
    "Sink",
)


__getattr__ = _lazy_attributes(
    __name__, {"AmqpBridge": "tidings.bridges.amqp", "MqttBridge": "tidings.bridges.mqtt"}
)
