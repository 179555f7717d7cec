"""What kb talks to: the Gemini emulator and the real SDK, the local model, SQLite and PostgreSQL."""
