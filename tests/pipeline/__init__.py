"""Files to vectors through a real database: ingest, the batch ledger, the worker, crashes, reindex."""
