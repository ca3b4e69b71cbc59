"""Credentials out of text about to be shown: a URI's userinfo and secret options.

Standard library only, so the command line can redact its own messages
without importing the MongoDB driver.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote, unquote_plus

SECRET_OPTIONS = frozenset({"authmechanismproperties", "tlscertificatekeyfilepassword"})
"""URI options whose values are credentials (compared in lower case)."""


def uri_secrets(text: str) -> set[str]:
    """Every credential a URI (or ``user:password@host``) holds, as written,
    decoded and re-encoded: its userinfo, its password, and the values of
    SECRET_OPTIONS (and their parts).

    Works on malformed text too: when in doubt, more is taken for secret.
    """
    rest = text.split("://", 1)[-1]
    found: set[str] = set()
    authority = rest.split("?", 1)[0]
    if "@" in authority or "@" in rest:
        userinfo = (authority if "@" in authority else rest).rsplit("@", 1)[0]
        found |= {userinfo, *userinfo.split(":", 1)[1:]}  # the user name alone is no secret
    if "?" in rest:
        for option in re.split(r"[&;]", rest.split("?", 1)[1]):
            name, _, value = option.partition("=")
            if unquote(name).lower() in SECRET_OPTIONS and value:
                found |= {value, *re.split(r"[,:]", unquote(value))}
    decoded = {unquote(s) for s in found} | {unquote_plus(s) for s in found}
    encoded = {quote(s, safe="") for s in decoded} | {quote_plus(s) for s in decoded}
    return {s for s in found | decoded | encoded if s}


def redact(message: str, uri: str) -> str:
    """``message`` with every credential of ``uri`` replaced by ``***``."""
    for secret in sorted(uri_secrets(uri), key=len, reverse=True):
        message = message.replace(secret, "***")
    return message
