"""Defaults shared by the config and the command line, in a module light enough for the CLI to import
before torch loads (the config's own defaults live in its dataclasses, config.py)."""

DEFAULT_MODEL = "bundled:smollm2-135m-instruct"  # every player, target and evaluation defaults to it
