"""Where the JVM jars live: resolved once from Maven Central by `make jars`, then only read.

`.jars/spark` holds the Kafka connector and Delta jars handed to Spark with ``spark.jars``; `.jars/kafka` is the
classpath of the local Kafka broker. Nothing here downloads: a missing folder is an error telling the user to
run ``make jars``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class JarsMissingError(RuntimeError):
    pass


def jars_dir() -> Path:
    return Path(os.environ.get("FLOWSENTINEL_JARS_DIR", REPO_ROOT / ".jars"))


def _jars(sub: str) -> list[Path]:
    folder = jars_dir() / sub
    found = sorted(folder.glob("*.jar"))
    if not found:
        raise JarsMissingError(f"no jars in {folder}: run `make jars` (resolves them from Maven Central once)")
    return found


def spark_jars() -> list[Path]:
    return _jars("spark")


def kafka_classpath() -> str:
    return os.pathsep.join(str(p) for p in _jars("kafka"))


_VERSION = re.compile(r"-\d[^-]*(-[A-Za-z0-9.]+)?\.jar$")


def artifact_name(jar: str) -> str:
    """'jackson-core-2.13.5.jar' -> 'jackson-core'; 'zstd-jni-1.5.7-3.jar' -> 'zstd-jni'."""
    return _VERSION.sub("", jar)


def prune_against_pyspark(folder: Path) -> list[str]:
    """Delete jars whose artifact pyspark already ships: Spark's own version must win on the classpath."""
    import pyspark

    shipped = {artifact_name(p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    removed = []
    for jar in sorted(folder.glob("*.jar")):
        if artifact_name(jar.name) in shipped:
            jar.unlink()
            removed.append(jar.name)
    return removed


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "prune":
        sys.exit("usage: python -m jobs.lib.jvm prune DIR")
    gone = prune_against_pyspark(Path(sys.argv[2]))
    print(f"kept {len(list(Path(sys.argv[2]).glob('*.jar')))} jars; removed {len(gone)} that pyspark ships")
