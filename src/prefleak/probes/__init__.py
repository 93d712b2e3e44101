"""Probe students: small LoRA students trained on each generator's synthetic data, whose answers are
judged to measure preference leakage directly (see docs/probes.md).

Only stdlib and numpy are imported at module level; torch, transformers, peft and vllm are imported
inside the functions that need them, so the event-log side of prefleak works without the `probe`
extra.
"""
