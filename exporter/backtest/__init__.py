"""Backtests: replay prediction logs through the monitor and the alert rules, offline."""
