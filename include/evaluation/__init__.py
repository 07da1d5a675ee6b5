"""Evaluation of a retrained model on the frozen held-out set, and the promotion gates.

- ``names``: the gates' names and profiles, without numpy (the trigger form reads them while the DAG file is parsed)
- ``metrics``: ``Prediction`` and the metrics computed from predictions (scikit-learn loads on first use)
- ``held_out``: scoring a held-out set through Cognigy; saving and loading predictions
- ``config``: ``GateConfig``, the thresholds and their profiles
- ``statistics``: paired statistics (McNemar's exact test, bootstraps)
- ``gates``: the gate rules and ``evaluate_gates``
- ``results``: ``GateResult`` and ``GateReport``, what the gates decide
- ``report``: the report files and charts a reviewer opens

This file imports nothing, so that importing ``names``, ``metrics`` or ``held_out`` stays light.
"""
