"""Pure logic, no database and no server: chunking, file reading, search units, retry rules, the docs."""
