"""Train the fast student of the dense protocol and write its weights: the command of
:func:`jndqa.flows.student.main`, whose module documents the steps, the options and how the
committed student was made.

    .venv/bin/python benchmarks/train_student.py --help
"""

from __future__ import annotations

import sys

from jndqa.flows.student import main

if __name__ == "__main__":
    sys.exit(main())
