"""What a run is asked to do: the retrain request (form or API parameters) and the fleet of flow/locales.

- ``retrain_request``: ``RetrainRequest`` and ``Target``, validated with errors that name the field
- ``fleet``: the fleet file (``fleet.json`` here by default) a scheduled run retrains
"""
