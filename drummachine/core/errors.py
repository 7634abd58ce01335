"""The one exception type a user sees: what went wrong and where, in one line."""

from __future__ import annotations


class DrumMachineError(Exception):
    """A problem with the user's input or environment (bad file, missing port, ...).

    ``where`` names the file, port or option; ``what`` says what is wrong and, where it
    helps, what is allowed. The CLI prints ``where: what`` and exits with status 2.
    """

    def __init__(self, where: str, what: str):
        self.where = str(where)
        self.what = what
        super().__init__(f"{self.where}: {what}" if self.where else what)
