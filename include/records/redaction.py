"""Keep secrets out of logs, audit records and MLflow.

Two tools:

* :func:`redact` masks *values* stored under keys that look secret (``api_key``, ``client_secret``,
  ``Authorization``, ``auth.token``, ``cognigyApiKey`` ...), at any depth of dicts and lists.
* :func:`redact_text` masks secrets inside free text:

  - *known* secret values (the API key you just used, every :func:`register_secret`-ed value) in each form they
    take in text (:func:`secret_forms`): as given, in any letter case, URL-encoded (once or twice, ``%20`` or
    ``+``), JSON-escaped, base64 (standard or URL-safe, also as part of a longer encoded blob such as a Basic
    credential), and split over lines;
  - credentials in URLs, found by parsing each URL with :mod:`urllib.parse`: the user-info (``redis://:pw@h``,
    ``postgresql://user:pw@h/db``, ``https://token@h``) and the values of query or fragment parameters whose
    names denote a credential (``token``, ``key``, ``sig``, ``X-Amz-Security-Token``, ``access_token`` ...,
    :func:`is_credential_param`);
  - ``Authorization: <scheme> <credentials>`` headers, any scheme, also JSON-escaped (``\\"Authorization\\": ...``);
  - ``Bearer``/``Basic`` credentials, JWTs and assignments such as ``X-API-Key: v``, ``client_secret=v`` or
    ``password="several words"``.

A key looks secret when its last words, with separators and case removed, spell one of
:data:`SECRET_KEY_WORDS`: ``x-api-key``, ``db_password``, ``auth.client_secret`` and ``refreshToken`` do;
``max_tokens``, ``token_count`` and ``secret_ref`` do not (so metrics and counters survive).

Processes that log elsewhere too (Airflow's task logs) hear of every registered secret through
:func:`on_register` and mask :func:`secret_forms` there (``cognigy_provider.hooks.cognigy``).
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit

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
# URL query/fragment parameters whose value is a credential, besides every secret-looking key: presigned URLs
# (S3 `X-Amz-Signature`/`X-Amz-Credential`, GCS `X-Goog-Signature`, Azure SAS `sig`), `key=` API keys, `pwd=`.
CREDENTIAL_PARAM_WORDS: frozenset[str] = frozenset(
    {
        "key",
        "accesskey",
        "secretkey",
        "privatekey",
        "sig",
        "signature",
        "credential",
        "credentials",
        "xamzsignature",
        "xamzcredential",
        "xgoogsignature",
        "xgoogcredential",
        "awsaccesskeyid",
        "googleaccessid",
        "auth",
        "pwd",
        "pass",
        "passphrase",
        "code",
        "session",
        "sessionid",
        "jwt",
    }
)

_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_SEPARATORS = re.compile(r"[\s._\-/:]+")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{4,}")
# `X-API-Key: v`, `api_key=v`, `"client_secret": "v"`, `password="two words"`, `X-Amz-Security-Token: v` …
_KEY_VALUE = re.compile(
    r"(?i)(\b(?:x[-_]?api[-_]?key|api[-_]?key|client[-_]?secret|password|passwd|passphrase|access[-_]?token|"
    r"refresh[-_]?token|id[-_]?token|secret|(?:x[-_]amz[-_])?security[-_]?token|session[-_]?token|auth[-_]?token)"
    r"\b(?:\\?[\"'])?\s*[:=]\s*)"
    r"(\\\"(?:(?!\\\").)*\\\"|\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s\"',;&}\\]{3,})"
)
# `Authorization: Token abc`, `"Authorization": "Digest u=…"`, `\"authorization\":\"Bearer x\"`, `Proxy-Authorization`.
_AUTHORIZATION = re.compile(
    r"(?i)(\bauthorization\b(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?)(?:([A-Za-z][\w.+-]*)[ \t]+)?"
    r"((?:\w+=(?:\"[^\"\r\n]*\"|[^\s,;\"]*)[ \t]*,?[ \t]*)+|[^\r\n\"'\\;,]+)"
)
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]{1,30}://[^\s\"'<>\\`]+")
_PATH_QUERY = re.compile(r"(?<![\w:/.])/[^\s\"'<>\\`?#]*[?#][^\s\"'<>\\`]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
# A line break (real or JSON-escaped) with its indentation: a secret may be split there.
_LINE_BREAK = re.compile(r"[ \t]*(?:\r\n|\r|\n|\\r\\n|\\n)[ \t>]*")
_REGISTERED: set[str] = set()
_LISTENERS: list[Callable[[str], None]] = []


def register_secret(value: str | None) -> None:
    """Remember a secret this process holds (API key, client secret, a live access token): every later
    `redact_text`/`redact` masks it, in all its :func:`secret_forms`, wherever it appears, whoever calls; and
    every :func:`on_register` listener hears of it."""
    if value and len(value) >= 4 and value not in _REGISTERED:
        _REGISTERED.add(value)
        for listener in list(_LISTENERS):
            listener(value)


def on_register(listener: Callable[[str], None]) -> None:
    """Call ``listener(secret)`` for every secret registered so far and from now on (once per listener)."""
    if listener in _LISTENERS:
        return
    _LISTENERS.append(listener)
    for value in sorted(_REGISTERED):
        listener(value)


@functools.lru_cache(maxsize=1024)
def _forms(value: str) -> tuple[str, ...]:
    return tuple(secret_forms(value))


def secret_forms(value: str) -> list[str]:
    """The forms ``value`` takes in text: itself, upper and lower case, URL-encoded (``quote``/``quote_plus``,
    once and twice), JSON-escaped, and base64 (standard and URL-safe; whole, and the part that is the same at each
    of the three byte offsets inside a longer encoded blob, e.g. ``Basic base64(id:secret)``). Longest first."""
    forms = {value, value.upper(), value.lower()}
    for once in (quote(value, safe=""), quote_plus(value, safe="")):
        forms.update({once, quote(once, safe="")})
    forms.update({json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]})
    raw = value.encode("utf-8")
    if len(raw) >= 6:  # shorter: a base64 fragment of 4-6 characters would match too much else
        whole = base64.b64encode(raw).decode("ascii")
        forms.update({whole, whole.rstrip("="), base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")})
        for offset in range(3):
            encoded = base64.b64encode(b"\0" * offset + raw).decode("ascii")
            # characters whose 6 bits all come from `value`: the same whatever precedes or follows it
            part = encoded[-(-8 * offset // 6) : 8 * (offset + len(raw)) // 6]
            forms.update({part, part.replace("+", "-").replace("/", "_")})
    return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)


def is_secret_key(key: object) -> bool:
    """True if a mapping key names a secret (see the module docstring for the rule)."""
    words = _words(key)
    return any("".join(words[i:]) in SECRET_KEY_WORDS for i in range(len(words)))


def is_credential_param(name: str) -> bool:
    """True if a URL query/fragment parameter of this name carries a credential (``token``, ``key``, ``sig``,
    ``X-Amz-Security-Token``, ``access_token`` ...)."""
    words = _words(name)
    return is_secret_key(name) or any("".join(words[i:]) in CREDENTIAL_PARAM_WORDS for i in range(len(words)))


def _words(key: object) -> list[str]:
    if not isinstance(key, str):
        return []
    return [w for w in _SEPARATORS.split(_CAMEL_BOUNDARY.sub(r"\1_\2", key).lower()) if w]


def url_credentials(url: str | None) -> list[str]:
    """The credentials a URL carries (user-info password or lone user, credential query/fragment values),
    decoded: what a process that holds this URL should :func:`register_secret`."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and userinfo:
        user, colon, password = userinfo.partition(":")
        found.append(unquote_plus(password) if colon else unquote_plus(user))
    for piece in (parts.query, parts.fragment):
        for pair in re.split(r"[&;]", piece):
            name, eq, value = pair.partition("=")
            if eq and value and is_credential_param(unquote_plus(name)):
                found.append(unquote_plus(value))
    return [f for f in found if f]


def redact(obj: Any, secrets: Iterable[str | None] = ()) -> Any:
    """Return a deep copy of ``obj`` with the values under secret-looking keys replaced by ``"***"``.

    ``None`` values stay ``None`` (nothing to hide). Every string (keys included) goes through
    :func:`redact_text` with the known ``secrets``. Tuples and sets come back as lists, so the result is always
    JSON-friendly.
    """
    known = _usable(secrets)
    return _redact(obj, known)


def _redact(obj: Any, known: list[str]) -> Any:
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            clean_key = redact_text(key, known) if isinstance(key, str) else key
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
    """Mask in ``text``: the known ``secrets`` and every registered secret in all their forms, credentials in
    URLs (parsed), ``Authorization`` headers, ``Bearer``/``Basic`` credentials, API-key and password assignments
    and JWTs (see the module docstring)."""
    known = _usable([*secrets, *_REGISTERED])
    if known:
        text = _mask_known(text, known)
    text = _URL.sub(lambda m: _redact_url(m.group(0)), text)
    text = _PATH_QUERY.sub(lambda m: _redact_url(m.group(0)), text)
    text = _AUTHORIZATION.sub(_redact_authorization, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _KEY_VALUE.sub(_redact_assignment, text)
    return _JWT.sub(MASK, text)


def _mask_known(text: str, secrets: list[str]) -> str:
    """Mask every form of every secret, in any letter case, also where a line break (real or JSON-escaped, with
    its indentation) splits it: searched in a copy of ``text`` without line breaks, masked in ``text``."""
    index: list[int] | None = None
    flat = text
    if _LINE_BREAK.search(text):
        pieces, index, pos = [], [], 0
        for brk in _LINE_BREAK.finditer(text):
            pieces.append(text[pos : brk.start()])
            index.extend(range(pos, brk.start()))
            pos = brk.end()
        pieces.append(text[pos:])
        index.extend(range(pos, len(text)))
        flat = "".join(pieces)
    folded = flat.lower()
    if len(folded) != len(flat):  # a character whose lower case is longer: compare as written
        folded = flat
    spans: list[tuple[int, int]] = []
    for form in _folded_forms(tuple(secrets)):
        start = 0
        while (found := folded.find(form, start)) >= 0:
            end = found + len(form)
            spans.append((index[found], index[end - 1] + 1) if index is not None else (found, end))
            start = end
    if not spans:
        return text
    out, pos = [], 0
    for begin, end in sorted(spans):
        if end <= pos:
            continue
        if begin >= pos:
            out.extend((text[pos:begin], MASK))
        pos = end
    out.append(text[pos:])
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _folded_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    forms = {f.lower() for secret in secrets for f in _forms(secret)}
    forms |= {f.replace(" ", "") for f in forms if " " in f and len(f.replace(" ", "")) >= 8}  # split at a space
    return tuple(sorted(forms, key=len, reverse=True))


def _redact_url(url: str) -> str:
    """The URL with its user-info and credential parameters masked, everything else as written."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and userinfo:
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if colon else f"{MASK}@{hostport}"
    query, fragment = _redact_params(parts.query), _redact_params(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    head = f"{parts.scheme}://{netloc}" if parts.scheme or "//" in url[:12] else netloc
    return head + parts.path + (f"?{query}" if "?" in url else "") + (f"#{fragment}" if "#" in url else "")


def _redact_params(text: str) -> str:
    if "=" not in text:
        return text
    pieces = re.split(r"([&;])", text)
    for i in range(0, len(pieces), 2):
        name, eq, value = pieces[i].partition("=")
        if eq and value and is_credential_param(unquote_plus(name)):
            pieces[i] = f"{name}={MASK}"
    return "".join(pieces)


def _redact_authorization(match: re.Match[str]) -> str:
    prefix, scheme, credentials = match.group(1), match.group(2), match.group(3)
    if not credentials.strip() or credentials.strip() == MASK:
        return match.group(0)
    return f"{prefix}{scheme} {MASK}" if scheme else f"{prefix}{MASK}"


def _redact_assignment(match: re.Match[str]) -> str:
    prefix, value = match.group(1), match.group(2)
    for quote_mark in ('\\"', '"', "'"):
        if value.startswith(quote_mark) and value.endswith(quote_mark) and len(value) >= 2 * len(quote_mark):
            return f"{prefix}{quote_mark}{MASK}{quote_mark}"
    return f"{prefix}{MASK}"


def _usable(secrets: Iterable[str | None]) -> list[str]:
    # Longest first, so a secret that contains another one is masked whole.
    return sorted({s for s in secrets if s}, key=len, reverse=True)
