"""The agent as a system service: its config file, systemd's notify protocol, health and metrics."""
