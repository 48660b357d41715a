"""A deterministic simulator that drives n consensus engines and tries to break them.

Everything is a function of the seed: a virtual clock, a network with per-link delay,
jitter, loss, duplication, partitions and a global stabilisation time (GST), crashes and
restarts from durable state only, Byzantine strategies, twins, and rollback. A monitor
keeps the ground-truth log of every message and checks the invariants of CONSENSUS.md §6.
"""
