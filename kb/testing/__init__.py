"""Test doubles that kb ships for its own tests and for users testing their pipelines.

`kb.testing.gemini_emulator` is a stateful local emulator of the Gemini API that the real `google-genai` SDK
talks to over HTTP on 127.0.0.1. It imports nothing else from kb.
"""
