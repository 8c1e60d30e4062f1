"""One exception type for bad input: its message is one line that names the file and the problem."""
from __future__ import annotations

import os


class InputError(ValueError):
    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem.replace("\n", " ")
        super().__init__(f"{self.path}: {self.problem}")


class SetupError(InputError):
    """A problem with the command's set-up as a whole (a folder, the model), not with one case: exit code 2."""
