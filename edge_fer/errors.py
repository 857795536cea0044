"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input (files, options, data), not a bug in edge-fer."""

    exit_code = 2
