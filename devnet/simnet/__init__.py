"""Whole-network deterministic simulation: real validators on a virtual-time loop over a
simulated network, every choice a function of the seed (`qchain sim net`,
docs/SIMULATION.md)."""
