"""The `isr` command line (main) and its subcommand groups."""
