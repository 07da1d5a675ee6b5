"""Talking to NICE Cognigy.AI: connection settings, HTTP transport, one module per API dialect, the tenant's
shared request budget (``rate_limit``) and how often a training is polled (``poll_policy``)."""
