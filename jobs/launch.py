"""spark-submit's primary file: run one of the project's job modules from the shipped package.

    spark-submit --py-files dist/flowsentinel-0.1.0.zip ... dist/launch.py jobs.stream_detect --out OUT

spark-submit needs a Python file, not a module name; `make package` copies this file to dist/launch.py so a
cluster needs no checkout: the job modules come from the --py-files zip. The first line on stderr says which
code runs, so a log shows the build as well as the arguments.
"""

from __future__ import annotations

import runpy
import sys


def main(argv: list[str]) -> None:
    if not argv or not argv[0].startswith("jobs."):
        sys.exit("usage: launch.py jobs.<module> [job arguments...]")
    module = argv[0]
    import jobs

    print(f"flowsentinel: running {module} from {jobs.__file__}", file=sys.stderr, flush=True)
    sys.argv = argv  # the job's argparse sees its own arguments, with the module name as argv[0]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
