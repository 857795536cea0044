"""Errors a user can cause. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (files, options, data), not a bug in edge-fer.

    `param`: the parameter the message is about. The library names parameters ("batch_size
    must be >= 1, got 0"); the CLI puts the flag in its place (`render("--batch-size")`), so
    one message serves both.
    """

    exit_code = 2

    def __init__(self, message: str = "", *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def render(self, name: str | None = None) -> str:
        """The message, led by `name` (a flag) or else the parameter's own name."""
        lead = name or self.param
        return f"{lead} {self.message}" if lead else self.message

    def __str__(self) -> str:
        return self.render()

    def __reduce__(self):  # across processes (data loaders) with its parameter
        return type(self), (self.message,), {"param": self.param}
