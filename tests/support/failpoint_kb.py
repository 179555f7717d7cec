"""`kb` with one failpoint armed, for the fault-matrix tests:

    python tests/support/failpoint_kb.py POINT=ACTION[@SKIP] ARGS...

ACTION is `interrupt`, `crash` or `kill` (see `kb.failpoints`); ARGS are `kb`'s own. The point fires once,
on its hit after the first SKIP (default 0).
"""

import sys

from kb import failpoints
from kb.cli.commands import main

if __name__ == "__main__":
    point, action = sys.argv[1].split("=", 1)
    action, _, skip = action.partition("@")
    failpoints.arm(point, failpoints.once(failpoints.ACTIONS[action], int(skip or 0)))
    sys.argv = ["kb", *sys.argv[2:]]
    main()
