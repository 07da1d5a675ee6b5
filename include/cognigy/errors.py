"""Errors a user can see when talking to Cognigy, each saying what went wrong and what to do."""

from __future__ import annotations

from include.records.redaction import redact_text


class CognigyError(Exception):
    """Base class. `status` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, trace_id: str | None = None) -> None:
        # Server text may echo a credential (a `detail` quoting the header it refused): never carry one on.
        super().__init__(redact_text(message))
        self.status = status
        self.trace_id = trace_id


class AuthenticationError(CognigyError):
    """401 after one token refresh: the key or client credentials are wrong or expired."""


class PermissionDenied(CognigyError):
    """403: the key, user or token lacks a permission or OAuth2 scope (named in the message)."""


class NotFound(CognigyError):
    """404 on a flow, locale, task, model or version (named in the message)."""


class BadRequest(CognigyError):
    """400/413/422: Cognigy refused the request; the message carries its `detail`."""


class RateLimited(CognigyError):
    """429 from the tenant's rate limit. `retry_after` is in seconds when the server said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class TransientError(CognigyError):
    """5xx, timeout or connection failure: worth trying again later if the call is safe to repeat.
    `retry_after` is in seconds when a 503 said (Retry-After)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class TlsError(CognigyError):
    """The TLS handshake or certificate check failed: a configuration problem, never retried."""


class AmbiguousSubmission(TransientError):
    """A call with a side effect (start training, import) got no clear answer: it may or may not have
    happened. Never resend blindly; reconcile with the tenant's task list."""
