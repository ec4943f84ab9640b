"""The command line, one module per command group; thin: options in, a stage's function out.

Imports any wing.
"""
