"""Errors an operator sees: one line that names the problem and what to do."""


class UserError(Exception):
    """Bad input or a refused operation. Printed as one line; the process exits non-zero."""

    exit_code = 2
