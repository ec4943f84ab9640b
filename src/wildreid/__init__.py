"""wildreid: open-set re-identification of individual animals from photos."""

__version__ = "0.1.0"
