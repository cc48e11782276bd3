"""Trace-driven simulation of PACAO (paper Section V)."""
