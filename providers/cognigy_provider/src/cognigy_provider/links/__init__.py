"""The Cognigy.AI extra links: task-page buttons to the Cognigy flow/task and the MLflow run."""
