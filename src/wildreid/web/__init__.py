"""The review web app (`wildreid serve`), one router per area.

Imports review and every wing below it; never cli.
"""
