"""The agent's MQTT shell: topics, message schemas, the outbox, signed commands and the daemon.

Invariant: only :mod:`agent.mqtt.connection` touches aiomqtt or paho-mqtt; the rest of
the package sees :class:`~common.errors.BrokerError` and plain Python values.
"""
