"""Printing what others wrote: one sanitiser for terminals, one for spreadsheet cells, one URL redaction.

Labels, arch names, producers, metadata keys and file names come from model files and folders we did not
write. Printed raw, an ANSI escape clears the screen or forges a line ("x.png: eel 0.999"), a bidi override
reverses what the reader sees, and a CSV cell starting with "=" runs as a spreadsheet formula. URLs of
streams carry passwords and tokens that logs must not.

    printable("eel\\x1b[2J")          -> 'eel\\\\x1b[2J'   control characters shown, never obeyed
    csv_cell("=HYPERLINK(...)")       -> "'=HYPERLINK(...)"   OWASP's CSV-injection rule
    redact_url("rtsp://u:pw@cam/live?token=abc")  -> 'rtsp://u:***@cam/live?token=***'
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Unicode format characters that reorder or hide text (Trojan Source, CVE-2021-42574): LRE..RLO, LRI..PDI,
# and the invisible marks a label could use to look like another
BIDI_AND_INVISIBLE = {*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C,
                      0x200B, 0x200C, 0x200D, 0x2028, 0x2029, 0xFEFF}
# surrogates and private-use characters: no meaning a reader can check (by range, so that the packaged app needs
# no Unicode database for it)
OPAQUE_RANGES = ((0xD800, 0xDFFF), (0xE000, 0xF8FF), (0xF0000, 0x10FFFF))
MAX_PRINTED = 512  # characters of one untrusted string on a line; a 10 MB label is not for a terminal


def printable(text: object, limit: int = MAX_PRINTED) -> str:
    """``text`` safe to print on a terminal or a Qt label: C0/C1 control characters (ESC, CR, LF, BEL, DEL...),
    bidi overrides and zero-width marks are written as visible escapes (``\\x1b``, ``\\u202e``); long strings
    are cut to ``limit`` characters with an ellipsis."""
    text = str(text)
    cut = len(text) > limit
    if not cut and text.isascii() and text.isprintable():  # the common case (a label, a file name), checked in C
        return text
    out = []
    for char in text[:limit] if cut else text:
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif code in BIDI_AND_INVISIBLE or any(low <= code <= high for low, high in OPAQUE_RANGES):
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out) + ("…" if cut else "")


CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheet apps read as the start of a formula


def csv_cell(value: object) -> str:
    """A cell a spreadsheet shows as text: OWASP's rule prefixes a single quote to a cell starting with
    = + - @ tab or CR (it is still exact for our numbers: we pass those as numbers, not through here)."""
    text = str(value)
    return "'" + text if text.startswith(CSV_FORMULA_START) else text


# query parameters whose value is a secret; matched on the lowercased name, also as a suffix ("x_api_key")
SECRET_PARAMS = ("token", "key", "sig", "signature", "pwd", "pass", "password", "passwd", "secret", "auth",
                 "authorization", "access_token", "refresh_token", "id_token", "session", "sessionid", "credential",
                 "credentials", "apikey", "api_key", "x-amz-signature", "x-amz-credential", "x-amz-security-token")
# a path segment that looks like a secret: long hex (API keys, hashes used as tokens) or long base64/base64url
_SECRET_SEGMENT = re.compile(r"^(?:[0-9a-fA-F]{32,}|[A-Za-z0-9_\-+/=.]{40,})$")
_MASK = "***"


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(lowered == word or lowered.endswith(("_" + word, "-" + word, "." + word)) for word in SECRET_PARAMS)


def _looks_secret(segment: str) -> bool:
    # a long run of letters and digits mixed is a token; a long plain word or a file name is not
    return bool(_SECRET_SEGMENT.match(segment)) and any(c.isdigit() for c in segment) and any(c.isalpha() for c in segment)


def redact_url(url: str) -> str:
    """The URL with its secrets masked: the password in userinfo (a user name alone too), secret-looking query values (token, key,
    sig, pwd, ...), and path segments that look like tokens (long hex or base64). Streams often carry
    credentials; logs, the terminal and the app's menus show only this form."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            host = netloc.rsplit("@", 1)[1]
            user = parts.username or ""
            # a user name alone is often the whole credential (https://TOKEN@host/): masked too
            netloc = f"{user}:{_MASK}@{host}" if parts.password is not None else f"{_MASK}@{host}"
        path = "/".join(_MASK if _looks_secret(segment) else segment for segment in parts.path.split("/"))
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(_secret_name(name) or _looks_secret(value) for name, value in pairs):
                query = urlencode([(name, _MASK if _secret_name(name) or _looks_secret(value) else value)
                                   for name, value in pairs], safe="*")
        fragment = _MASK if parts.fragment and ("=" in parts.fragment or _looks_secret(parts.fragment)) else parts.fragment
        return urlunsplit(parts._replace(netloc=netloc, path=path, query=query, fragment=fragment))
    except ValueError:  # not a URL urllib can parse (a bad port...): show the scheme only
        return url.split("://", 1)[0] + "://" + _MASK


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact_text(text: str) -> str:
    """Every URL inside a message redacted (library errors quote the address they failed on)."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def source_label(spec: str) -> str:
    """How a source the user gave is named in menus and logs: a stream URL redacted, else as given, printable."""
    return printable(redact_url(spec) if "://" in spec else spec)
