"""Embedding providers: `base` (the Embedder and BatchBackend protocols), `gemini` (the Gemini API through
google-genai), `local` (the offline wordllama model), and `factory`, which builds one from the settings.
Nothing here touches the database."""
