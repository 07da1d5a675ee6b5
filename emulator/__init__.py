"""Cognigy.AI emulator: a real HTTP server for tests and local runs (`python -m emulator --help`).

Modules: app (factory), gateway (auth, rate limit, faults), rest_api (real /new/v2.0 dialect),
training_jobs (made-up /api/v2/ai/nlp dialect), admin (/_emulator), engine (tasks), classifier (sklearn),
store (SQLite), seed (fixed IDs), knobs (fault knobs, rate limiter, stats).
"""
