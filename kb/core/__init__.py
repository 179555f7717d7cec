"""The pure core: text to chunks, files to text, the model facts, retry and rate rules, result lines.
No database, no network, no SDK."""
