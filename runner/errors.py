"""The one error type users see: what is wrong, where, and how to fix it."""


class UserError(Exception):
    """A mistake the user can fix. The CLI prints it as one paragraph and exits with code 2.

    `where` names the file, field or host; `problem` says what is wrong and what the trainer
    would do with it; `fix` says what to change.
    """

    exit_code = 2

    def __init__(self, where: str, problem: str, fix: str):
        self.where, self.problem, self.fix = where, problem, fix
        super().__init__(f"{where}: {problem} Fix: {fix}")


class JobInvalid(UserError):
    """A job file that fails validation; carries every problem found, not just the first."""

    def __init__(self, errors: list[UserError]):
        self.errors = errors
        first = errors[0]
        super().__init__(first.where, first.problem, first.fix)

    def __str__(self) -> str:
        return "\n\n".join(str(e) for e in self.errors)
