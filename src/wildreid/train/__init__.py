"""Fine-tuning a backbone on a catalogue's labels: training, settings search, augmentation.

Imports evaluate and the wings below it; never catalog.
"""
