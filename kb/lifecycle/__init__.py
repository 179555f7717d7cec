"""The lifecycle stage: moving a knowledge base to another embedding model or another database."""
