"""The core: the offer dialogue, policies, outcomes, numbers, hours and estimates; no I/O."""
