"""The one exception type that commands turn into a clean message and exit code."""


class UserError(ValueError):
    """Bad input from the user: a recipe key, a file, a shape.

    The message always names what was wrong (the key path, file or shape) and
    says how to fix it. Commands print it without a traceback and exit with
    status 2.
    """
