"""xfr: black-box explainable face analysis, replicated."""
__version__ = "0.1.0"
