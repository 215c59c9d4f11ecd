"""The one exception type for bad user input; the CLI prints it as a single line."""


class CompressError(Exception):
    """Bad input or state the user can fix; the message says how."""
