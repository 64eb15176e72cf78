"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input or an unusable environment: the message says what and where."""

    exit_code = 2
