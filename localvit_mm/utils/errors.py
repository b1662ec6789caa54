"""The error the tools report as one line: a problem and its fix."""


class UserInputError(Exception):
    """Bad input from the command line or a config (not a bug).

    ``tools/train.py`` and ``tools/test.py`` print its message as a single
    ``error: ...`` line and exit with status 2.
    """
