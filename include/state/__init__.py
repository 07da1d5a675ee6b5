"""The pipeline's durable state, local folder or object store (``COGNIGY_RETRAIN_STATE_URI``).

- ``state_store``: read, write, create-exclusive, verified read-back; the one place that knows the store
- ``durable``: fsync helpers for local files
- ``target_memory``: what each flow/locale served after its last promotion (what a rollback restores)
"""
