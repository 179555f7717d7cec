"""The database: every SQL statement kb runs lives in this package.

`engine` and `dbapi` connect (SQLAlchemy, and the bare driver for cold read-only commands), `schema` and
`migrate` define and upgrade the tables, `reader` and `readmodel` read, and one module per kind of row
writes: `documents` (documents and chunks), `fulltext`, `vectors` (and their quantized codes), `spaces`,
`tasks`, `ledger` and `claims` (batch jobs), `lease` (the worker's), `querycache`, `usage` (spend).
Nothing here calls a provider or knows about services.
"""
