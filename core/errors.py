class LatentLabInputError(ValueError):
    """Bad input a user can fix: says what was wrong and how to fix it.

    Core code raises it without naming a node; the node layer adds the node's name.
    """

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {fix}".strip())


def require(condition: bool, problem: str, fix: str = "") -> None:
    if not condition:
        raise LatentLabInputError(problem, fix)
