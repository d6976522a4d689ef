"""Errors the CLI reports as one line on stderr, with no traceback."""


class UserError(Exception):
    """A mistake in what the user asked for or gave us (missing file, bad model, bad flag...): exit 2."""

    exit_code = 2


class CheckFailed(UserError):
    """A check the tool makes on its own result failed (export parity, accuracy drop): exit 1."""

    exit_code = 1
