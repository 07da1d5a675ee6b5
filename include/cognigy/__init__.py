"""Talking to NICE Cognigy.AI: connection settings, HTTP transport, and one module per API dialect."""
