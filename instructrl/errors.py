"""User-facing errors: the CLI prints them in one line (no traceback) and exits 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: says what, where (path:line or config key) and what was expected."""


class ConfigError(UserError):
    """A config key that does not exist, has the wrong type, or contradicts another key."""


class ModelNotFoundError(UserError):
    """A model spec that is neither `default`, a local HF directory, nor a cached hub id."""


class RecordError(UserError):
    """One or more invalid JSONL records; `problems` holds every `path:line: field: message`."""

    def __init__(self, problems: list[str], total: int | None = None):
        self.problems = problems
        self.total = len(problems) if total is None else total
        more = self.total - len(problems)
        text = "\n".join(problems)
        if more > 0:
            text += f"\n... and {more} more error(s)"
        super().__init__(text)
