"""The one exception the data package raises for bad input: its message names the file or key."""

from segjax.errors import UserError


class DataError(UserError, ValueError):
    """Bad data or data configuration; the message names the file, split or key at fault."""
