"""The low layer every stage builds on: the Stage contract, the run layout, fingerprints, executors."""
