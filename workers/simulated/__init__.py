"""Simulated trials: known worlds, the safe expression parser, the simulated trainer."""
