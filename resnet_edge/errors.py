"""Errors the CLI reports as one line on stderr, with no traceback."""


class UserError(Exception):
    """A mistake in what the user asked for or gave us (missing file, bad model, bad flag...): exit 2."""

    exit_code = 2


class CheckFailed(UserError):
    """A check the tool makes on its own result failed (export parity, accuracy drop): exit 1."""

    exit_code = 1


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message ("" if it has none): libraries (ONNX Runtime, torch,
    OpenCV) put pages of detail under it that a one-line report cannot carry."""
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def opencv_line(error: BaseException) -> str:
    """OpenCV puts its reason on the last line, after the source location: "OpenCV(5.0.0) /io/.../x.cpp:449:
    error: (-215:Assertion failed) ..."."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else type(error).__name__
    return line.split(" error: ", 1)[-1][:160]


def describe_error(error: BaseException) -> str:
    """One line for the user: our own errors carry their message, others get their type too."""
    from .safety import redact_text  # library errors quote the stream URL they failed on, secrets and all

    text = redact_text(first_line(error))
    if isinstance(error, UserError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
