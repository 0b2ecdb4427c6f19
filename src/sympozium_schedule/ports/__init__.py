"""Ports: the interfaces the runtime needs from the outside world.

Contract: typing only, no I/O. Adapters (``sympozium_schedule.adapters``)
implement these against SQLite, the Kubernetes API and NATS.
"""
