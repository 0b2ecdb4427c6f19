"""The pure core: schedule math, fire decisions, run naming and status.

Contract: no I/O and no clock reads. Every function that needs the time takes
``now`` (an aware datetime) as a parameter, so tests drive it on virtual time
and two controllers given the same inputs compute the same writes.
"""
