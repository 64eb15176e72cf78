"""Orchestration: one scenario run, a matrix of runs, and verifying what an archive kept."""
