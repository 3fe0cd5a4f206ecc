"""`make package`: everything a cluster needs to run the jobs with spark-submit, built into dist/.

    python -m jobs.package [--dist dist] [--model models/default]

    dist/flowsentinel-<v>-py3-none-any.whl  the project (jobs, models, schemas) for `pip install` on images/nodes
    dist/flowsentinel-<v>.zip               the same wheel under a .zip name, for --py-files (Spark puts only
                                            .zip/.egg/.jar files on the Python workers' path)
    dist/launch.py                          the primary file for spark-submit: runs a job module from the zip
    dist/conf/                              defaults.toml, log4j2.properties, GPU settings, for --files
    dist/jars/                              the Kafka connector and Delta jars (copy of .jars/spark), for --jars
    dist/flowsentinel-model.tar.gz          the model artifact (files at the root), for --archives ...#model
    dist/MANIFEST.json                      what was built: files with sha256, model version

The wheel is written here with zipfile (PEP 427 layout: packages, METADATA, WHEEL, RECORD) rather than by a
build backend, so packaging needs no network and no build tools beyond this venv. The model is not inside the
wheel: it ships as its own archive so a model upgrade or rollback is a different --archives file, not a
different build of the code.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shlex
import shutil
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jobs.lib.jvm import REPO_ROOT, spark_jars
from jobs.lib.outputs import OutputFolderError, replace_output_dir
from jobs.lib.spark import AVRO_LIMITS

PACKAGES = ("jobs", "models", "schemas")
CONF_FILES = ("defaults.toml", "log4j2.properties", "spark-gpu.conf", "gpu-discovery.sh")
MODEL_ARCHIVE = "flowsentinel-model.tar.gz"
MODEL_ALIAS = "model"  # --archives dist/flowsentinel-model.tar.gz#model unpacks it as ./model on every node
_EPOCH = (2020, 1, 1, 0, 0, 0)  # fixed zip timestamps: the same sources give the same bytes


def project_metadata(root: Path = REPO_ROOT) -> dict[str, object]:
    with open(root / "pyproject.toml", "rb") as fh:
        return dict(tomllib.load(fh)["project"])


def _package_files(root: Path) -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*")):
            rel = path.relative_to(root)
            # Only source; the model's own folder (models/default) ships as the separate archive.
            if (path.is_file() and path.suffix == ".py" and "__pycache__" not in rel.parts
                    and rel.parts[:2] != ("models", "default")):
                files.append(rel)
    return files


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(out_dir: Path, root: Path = REPO_ROOT) -> Path:
    """A pure-Python wheel of PACKAGES, dependencies declared as in pyproject.toml."""
    meta = project_metadata(root)
    name, version = str(meta["name"]), str(meta["version"])
    dist_info = f"{name}-{version}.dist-info"
    metadata = "\n".join([
        "Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", f"Summary: {meta.get('description', '')}",
        f"Requires-Python: {meta.get('requires-python', '')}",
        *[f"Requires-Dist: {dep}" for dep in meta.get("dependencies", [])],  # type: ignore[attr-defined]
    ]) + "\n"
    wheel_text = "Wheel-Version: 1.0\nGenerator: flowsentinel jobs.package\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries: list[tuple[str, bytes]] = [(rel.as_posix(), (root / rel).read_bytes()) for rel in _package_files(root)]
    entries += [(f"{dist_info}/METADATA", metadata.encode()), (f"{dist_info}/WHEEL", wheel_text.encode())]
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in entries)
    record += f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode()))

    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, data in entries:
            info = zipfile.ZipInfo(path, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return wheel


def build_model_archive(model_dir: Path, out: Path) -> str:
    """tar.gz of the model folder's files at the archive root; returns the model version from its manifest."""
    manifest = model_dir / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{model_dir} is not a model artifact (no manifest.json); train one or pass --model")
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            if path.is_file():
                tar.add(path, arcname=path.name, filter=_reset_owner)
    return str(json.loads(manifest.read_text()).get("model_version", "unknown"))


def _reset_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy(files: Iterable[Path], target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(f, target / f.name)) for f in files]


def build(dist: Path, model_dir: Path, root: Path = REPO_ROOT) -> dict[str, Any]:
    """Build dist/ from scratch; returns the manifest (also written to dist/MANIFEST.json).

    Raises OutputFolderError, before anything is written, if `dist` holds files that a build did not leave."""
    dist = replace_output_dir(dist, "jobs.package")
    wheel = build_wheel(dist, root)
    py_zip = Path(shutil.copy2(wheel, dist / wheel.name.replace("-py3-none-any.whl", ".zip")))
    launcher = Path(shutil.copy2(root / "jobs" / "launch.py", dist / "launch.py"))
    conf = _copy([root / "conf" / n for n in CONF_FILES if (root / "conf" / n).is_file()], dist / "conf")
    for script in conf:
        if script.suffix == ".sh":
            script.chmod(0o755)  # a GPU discovery script must be executable on the node
    jars = _copy(spark_jars(), dist / "jars")
    model_version = build_model_archive(model_dir, dist / MODEL_ARCHIVE)
    files = [wheel, py_zip, launcher, *conf, *jars, dist / MODEL_ARCHIVE]
    manifest: dict[str, object] = {
        "version": project_metadata(root)["version"],
        "model_version": model_version,
        "model_source": str(model_dir),
        "files": {str(f.relative_to(dist)): _sha256(f) for f in files},
    }
    (dist / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def submit_args(dist: Path, conf_dir_on_nodes: str = ".") -> list[str]:
    """The spark-submit options that ship what build() made: code, jars, conf files and the model.

    Files given with --files land in each executor's working directory (and the driver's on YARN/K8s cluster
    mode), hence FLOWSENTINEL_CONF_DIR=. there; in client mode the driver finds dist/conf beside the zip itself.
    """
    py_zip = next(dist.glob("flowsentinel-*.zip"))
    jars = sorted((dist / "jars").glob("*.jar"))
    conf_files = [dist / "conf" / n for n in ("defaults.toml", "log4j2.properties")]
    return [
        "--py-files", str(py_zip),
        "--jars", ",".join(str(j) for j in jars),
        "--files", ",".join(str(f) for f in conf_files),
        "--archives", f"{dist / MODEL_ARCHIVE}#{MODEL_ALIAS}",
        "--conf", f"spark.executorEnv.FLOWSENTINEL_CONF_DIR={conf_dir_on_nodes}",
        # the query thread needs a deeper stack than 1 MB; Avro's length limits (see jobs/lib/spark.py)
        "--conf", f"spark.driver.extraJavaOptions=-Xss32m {AVRO_LIMITS}",
        "--conf", f"spark.executor.extraJavaOptions={AVRO_LIMITS}",
        "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
        "--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dist", default=str(REPO_ROOT / "dist"),
                        help="output folder (rebuilt if new, empty or a previous build)")
    parser.add_argument("--model", default=str(REPO_ROOT / "models" / "default"), help="model artifact folder")
    args = parser.parse_args(argv)
    try:
        manifest = build(Path(args.dist), Path(args.model))
    except (FileNotFoundError, OSError, OutputFolderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"built {len(manifest['files'])} files into {args.dist} (model {manifest['model_version']})")
    # quoted: the driver's Java options hold a space
    print("spark-submit " + shlex.join(submit_args(Path(args.dist))) + " dist/launch.py jobs.stream_detect "
          f"--model {MODEL_ALIAS} --out OUT")
    return 0


if __name__ == "__main__":
    sys.exit(main())

