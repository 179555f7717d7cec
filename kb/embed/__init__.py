"""The embed stage: texts to vectors, online and through the Batch API, and the worker that drives it."""
