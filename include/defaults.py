"""Defaults of a run: the demo tenant (the bundled emulator's seeded project) and a request that works there.

Point these at a real tenant with the DAG's params or by editing this file.
"""

from __future__ import annotations

DEMO_PROJECT_ID = "6630a1b2c3d4e5f601234567"
DEMO_FLOW_ID = "6630a1b2c3d4e5f601234568"
DEMO_STAGING_FLOW_ID = "6630a1b2c3d4e5f601234569"  # same project, locales and intents; no endpoint serves it
DEMO_LOCALES = ["en-US"]
DEMO_MODEL_ID = "0b6f2c8e-5a4d-4e1f-9c3b-7d8e9f0a1b2c"
SAMPLES_PER_INTENT = 40
HELD_OUT_PER_INTENT = 8
