"""What each `minnow` subcommand does, kept out of cli.py so it stays a thin parser."""
