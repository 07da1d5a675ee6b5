"""Training and held-out data: the team's own labelled files, and the shipped demo set (demos and tests only).

- ``labelled_data``: the team's own JSON lines / CSV files, checked line by line (errors name file and line)
- ``data_uris``: where those files may be read from (allowed roots, no credentials) and bounded reads
- ``dataset``: the shipped demo data set (``intents.jsonl``, see README.md here); reaches a tenant only by name
"""
