"""The one error type of the io layer."""


class LoadError(ValueError):
    """A model or adapter that cannot be used; the message names it and says what is wrong."""
