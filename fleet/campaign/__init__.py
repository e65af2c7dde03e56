"""Upgrade campaigns: a pure model (:mod:`.model`, :mod:`.plan`) and an MQTT controller."""
