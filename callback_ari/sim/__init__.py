"""Simulation: the wire-level fake Asterisk, the sandbox PBX driver, the simulator and the demo."""
