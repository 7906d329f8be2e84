"""The one exception type for mistakes a user can fix (bad flag, file or data)."""


class UserError(Exception):
    """A problem caused by the user's input, with a message saying what to do.

    Scripts print the message as one line on stderr and exit with code 2;
    library callers can catch it like any other exception.
    """
