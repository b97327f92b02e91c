"""Simulated hospitals: two HIS vendor schemas and a workload generator that drives them."""
