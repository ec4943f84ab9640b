"""The command line, one module per command group; thin: options in, a stage's function out.

- main.py: the `wildreid` entry point; importing the command modules registers their commands.
- app.py: the root app, the consoles, the error handling every command shares, option groups.
- options.py: options several commands share, each declared once, and their groups (how a dataset
  is read, extraction speed, regions, viewpoints and evidence).
- identify.py (identify, demo), evaluate.py (evaluate, presets, validate), extract.py, train.py,
  serve.py, watch.py; gallery.py (gallery ...) and catalog.py (catalog ...).

Imports any wing; heavy ones (torch, the gallery, describe, web) only inside the commands that
need them, so that `wildreid --help` and the catalogue commands stay light.
"""
