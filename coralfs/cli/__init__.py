"""The coralfs command line (typer). Each command parses, calls one function, prints."""
