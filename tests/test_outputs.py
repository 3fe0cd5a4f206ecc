"""Output folders: a job replaces one only if it is new, empty or carries the marker a job left there."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.lib.outputs import MARKER, OutputFolderError, check_replaceable, replace_output_dir


def precious(folder: Path) -> Path:
    """A folder that looks like a user's: a file and a subfolder no job wrote."""
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "main.py").write_text("print('keep me')\n")
    (folder / "notes.txt").write_text("keep me\n")
    return folder


def untouched(folder: Path) -> bool:
    return ((folder / "notes.txt").read_text(), (folder / "src" / "main.py").read_text()) == (
        "keep me\n", "print('keep me')\n") and sorted(p.name for p in folder.iterdir()) == ["notes.txt", "src"]


def test_new_empty_and_marked_folders_are_replaced(tmp_path):
    new = replace_output_dir(tmp_path / "a" / "new", "test")
    assert sorted(p.name for p in new.iterdir()) == [MARKER]
    (new / "table").mkdir()
    (new / "table" / "part-0").write_text("old run")
    again = replace_output_dir(new, "test")  # the marker of the first run: replaced
    assert sorted(p.name for p in again.iterdir()) == [MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sorted(p.name for p in replace_output_dir(empty, "test").iterdir()) == [MARKER]


def test_a_foreign_folder_or_file_is_refused_naming_it(tmp_path):
    folder = precious(tmp_path / "repo")
    with pytest.raises(OutputFolderError, match=rf"output folder {folder} is not empty and was not written by "
                                                rf"FlowSentinel \(no {MARKER} in it; it holds notes.txt, src\)"):
        replace_output_dir(folder, "test")
    assert untouched(folder)
    a_file = tmp_path / "data.csv"
    a_file.write_text("x\n")
    with pytest.raises(OutputFolderError, match="data.csv"):
        replace_output_dir(a_file, "test")
    assert a_file.read_text() == "x\n"
    check_replaceable("hdfs:///x", None)  # nothing there
    check_replaceable("hdfs:///x", ["part-0", "manifest.json"], markers=("manifest.json",))


def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    from jobs import demo

    folder = precious(tmp_path / "checkout")
    assert demo.main(["--out", str(folder), "--data", str(tmp_path / "none")]) == 2
    assert f"error: output folder {folder} is not empty" in capsys.readouterr().err
    assert untouched(folder)


def test_package_refuses_a_folder_it_did_not_make(tmp_path):
    from jobs import package

    folder = precious(tmp_path / "dist")
    with pytest.raises(OutputFolderError, match=f"output folder {folder} is not empty"):
        package.build(folder, tmp_path / "no-model")
    assert untouched(folder)
    assert package.main(["--dist", str(folder), "--model", str(tmp_path / "no-model")]) == 2
    assert untouched(folder)


def test_train_refuses_an_out_folder_that_is_not_a_model_before_training(tmp_path, capsys):
    from jobs import train

    folder = precious(tmp_path / "data")
    assert train.main(["--data", str(tmp_path / "prepared"), "--out", str(folder)]) == 2
    assert f"error: output folder {folder} is not empty" in capsys.readouterr().err
    assert untouched(folder)


def test_save_artifact_replaces_a_model_folder_only(tmp_path):
    from tests.helpers import random_artifact

    model = random_artifact(tmp_path / "model", seq_len=1)
    (model / "stale.txt").write_text("from the last run")
    assert not (random_artifact(model, seq_len=1) / "stale.txt").exists()  # a model folder: replaced
    folder = precious(tmp_path / "home")
    with pytest.raises(OutputFolderError, match=f"output folder {folder} is not empty"):
        random_artifact(folder, seq_len=1)
    assert untouched(folder)
