"""Trace replay (DESIGN.md section 6): a trace of requests through the real selector and the real
degrade decisions against a simulated fleet on a virtual clock, once per policy.

Modules: `trace` (the JSONL format), `scenarios` (named request mixes), `capacity` (what load 1.0
means), `generate` (Poisson, bursty and diurnal arrivals), `noise` (the world's seeded randomness),
`fleet` (simulated GPUs: VRAM residency, FIFO queue, true durations), `engine` (the virtual clock),
`policies` (baselines and the oracle), `router_policy` (the product), `metrics`, `run` (one replay
of every policy), `record` (a replayed day into the database), `cli`.
"""
