"""Derived facts: statuses, capacity and thresholds, pure functions of readings and config."""
