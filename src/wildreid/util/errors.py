"""Errors shared by several wings."""


class BackboneUnavailable(RuntimeError):
    """The weights of a model (a backbone or a learned local matcher) cannot be found or fetched;
    the message says what to do."""
