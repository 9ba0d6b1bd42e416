"""Output folders of the training and evaluation entry points: the package writes only into folders it made.

A folder is usable as `--output_dir` when it does not exist yet, is empty, or carries the `.hbi_hf_output` marker
that [`claim_output_dir`] writes the first time the package uses it (so a re-run, `--resume_from_checkpoint` or an
evaluation into a training run's folder keep working). Any other folder holds someone else's files, which a run
would silently overwrite (`config.json`, `eval_results.json`, checkpoints): it is refused before any work is done.
"""

import os
from pathlib import Path

OUTPUT_MARKER = ".hbi_hf_output"


def is_package_output_dir(folder: str | os.PathLike) -> bool:
    """Whether `folder` is an output folder this package made (it carries the `.hbi_hf_output` marker)."""
    return (Path(folder) / OUTPUT_MARKER).is_file()


def claim_output_dir(folder: str | os.PathLike, flag: str = "--output_dir") -> Path:
    """Check that the package may write into `folder`, then create it (with parents) and mark it as the package's.

    Call it at the start of an entry point, before loading a model or data. Several processes of one launch may call
    it at once: the marker is written right after the folder is made, before anything else goes in.

    Args:
        folder (`str` or `os.PathLike`): the output folder.
        flag (`str`, *optional*, defaults to `"--output_dir"`): the command-line option that named it, for the error.

    Returns:
        `Path`: the folder, which now exists and carries the marker.

    Raises:
        `FileExistsError`: `folder` exists and is not an empty folder nor one this package made (no `.hbi_hf_output`
            marker); nothing in it is touched.
    """
    folder = Path(folder)
    if folder.exists() and not is_package_output_dir(folder):
        if not folder.is_dir():
            raise FileExistsError(f"{flag} {folder} is a file, not a folder; choose a new or empty folder for {flag}")
        if any(entry.name != OUTPUT_MARKER for entry in folder.iterdir()):
            raise FileExistsError(
                f"{flag} {folder} already holds files that hbi_hf did not write (it has no {OUTPUT_MARKER} marker); "
                f"refusing to write there so that nothing in it is overwritten, and nothing was changed. Choose a new "
                f"or empty folder for {flag}."
            )
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / OUTPUT_MARKER
    if not marker.is_file():
        marker.write_text("This folder was created by hbi_hf; its training and evaluation runs may write into it.\n")
    return folder
