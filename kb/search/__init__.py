"""The search stage: hybrid full-text and vector search, the vector index, retrieval evaluation."""
