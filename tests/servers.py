"""Kept for older imports: the server helpers live in devtools.servers."""

from devtools.servers import *  # noqa: F403
from devtools.servers import ROOT, Emulator, Server, free_port, start_emulator, start_mlflow  # noqa: F401
