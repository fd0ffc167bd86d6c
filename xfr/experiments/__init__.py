"""Experiment code shared by the pipeline notebooks."""
