"""Simulated fleets: a fleet description, fast parallel building, agents hosted many to a process."""
