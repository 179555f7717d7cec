"""The `kb` command line: `commands` (Typer), `rendering` (what people and programs see), `statusview` and
`terminal`. Only `commands` is imported at start-up; the rest as each command needs it."""
