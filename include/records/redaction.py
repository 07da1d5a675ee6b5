"""Keep secrets out of logs, audit records and MLflow.

Two tools:

* :func:`redact` masks *values* stored under keys that look secret (``api_key``, ``client_secret``,
  ``Authorization``, ``auth.token``, ``cognigyApiKey`` ...), at any depth of dicts and lists.
* :func:`redact_text` masks *known* secret values (the API key you just used) inside free text, plus
  anything that looks like ``Bearer <token>``.

A key looks secret when its last words, with separators and case removed, spell one of
:data:`SECRET_KEY_WORDS`: ``x-api-key``, ``db_password``, ``auth.client_secret`` and ``refreshToken`` do;
``max_tokens``, ``token_count`` and ``secret_ref`` do not (so metrics and counters survive).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

SECRET_KEY_WORDS: frozenset[str] = frozenset(
    {
        "apikey",
        "xapikey",
        "clientsecret",
        "secret",
        "password",
        "passwd",
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authorization",
        "bearer",
    }
)

_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_SEPARATORS = re.compile(r"[\s._\-/:]+")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{4,}")
# `X-API-Key: v`, `api_key=v`, `"client_secret": "v"`, `password=v`, `access_token: v` … in free text.
_KEY_VALUE = re.compile(
    r"(?i)(\b(?:x[-_]?api[-_]?key|api[-_]?key|client[-_]?secret|password|passwd|access[-_]?token|"
    r"refresh[-_]?token|id[-_]?token|secret)\b[\"']?\s*[:=]\s*[\"']?)([^\s\"',;&}]{3,})"
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_REGISTERED: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret this process holds (API key, client secret, a live access token): every later
    `redact_text`/`redact` masks it wherever it appears, whoever calls."""
    if value and len(value) >= 4:
        _REGISTERED.add(value)


def is_secret_key(key: object) -> bool:
    """True if a mapping key names a secret (see the module docstring for the rule)."""
    if not isinstance(key, str):
        return False
    words = [w for w in _SEPARATORS.split(_CAMEL_BOUNDARY.sub(r"\1_\2", key).lower()) if w]
    return any("".join(words[i:]) in SECRET_KEY_WORDS for i in range(len(words)))


def redact(obj: Any, secrets: Iterable[str | None] = ()) -> Any:
    """Return a deep copy of ``obj`` with the values under secret-looking keys replaced by ``"***"``.

    ``None`` values stay ``None`` (nothing to hide). ``secrets`` are known secret values that are also
    masked wherever they appear inside strings (keys included). Tuples and sets come back as lists,
    so the result is always JSON-friendly.
    """
    known = _usable(secrets)
    return _redact(obj, known)


def _redact(obj: Any, known: list[str]) -> Any:
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            clean_key = redact_text(key, known) if isinstance(key, str) and known else key
            if is_secret_key(key) and value is not None:
                out[clean_key] = MASK
            else:
                out[clean_key] = _redact(value, known)
        return out
    if isinstance(obj, list | tuple | set | frozenset):
        return [_redact(item, known) for item in obj]
    if isinstance(obj, str):
        return redact_text(obj, known)
    if obj is None or isinstance(obj, bool | int | float):
        return obj
    return copy.deepcopy(obj)


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Mask the known ``secrets``, every registered secret, ``Bearer``/``Basic`` credentials, API-key and
    password assignments (``X-API-Key: …``, ``client_secret=…``) and JWTs (``eyJ….….…``) in ``text``."""
    for secret in _usable([*secrets, *_REGISTERED]):
        text = text.replace(secret, MASK)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{MASK}", text)
    return _JWT.sub(MASK, text)


def _usable(secrets: Iterable[str | None]) -> list[str]:
    # Longest first, so a secret that contains another one is masked whole.
    return sorted({s for s in secrets if s}, key=len, reverse=True)
