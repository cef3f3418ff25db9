"""The rule language, pure: schema, load, compile, conditions, throttle, templates, tests.

This package does no I/O beyond reading the rule files it is asked to load, and imports
nothing of ours, so rule tests and backtests run without any service.
"""
