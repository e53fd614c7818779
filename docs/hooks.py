"""mkdocs hook: put the example notebooks on the site without copying them into `docs/`.

The notebooks live in `notebooks/` (run by CI and by users); each becomes the page
`notebooks/NAME.ipynb`, rendered by mkdocs-jupyter. By default the repository's copies are
rendered as they are (code only: they are stored without outputs). When the environment
variable `NEURDE_DOCS_NOTEBOOKS` names a folder of executed copies (`.ci/run` executes every
notebook once, with `docs/execute_notebooks.py`, and points this variable at the result), those
are rendered instead, with their outputs and figures; a notebook missing there fails the build.
"""

import os
import tempfile
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent


def _parent_of_notebooks(source: Path) -> Path:
    """A folder whose `notebooks/` is `source`."""
    if source.name == "notebooks":
        return source.parent
    parent = Path(tempfile.mkdtemp(prefix="neurde-docs-"))
    (parent / "notebooks").symlink_to(source.resolve(), target_is_directory=True)
    return parent


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files: Files, config: MkDocsConfig) -> Files:
    executed = os.environ.get("NEURDE_DOCS_NOTEBOOKS")
    source = Path(executed) if executed else ROOT / "notebooks"
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        path = source / notebook.name
        if not path.is_file():
            raise PluginError(
                f"NEURDE_DOCS_NOTEBOOKS={executed!r} has no executed copy of {notebook.name}; "
                "run `python docs/execute_notebooks.py DIR` first, or unset the variable to "
                "render the notebooks without outputs."
            )
        # A plain File (mkdocs-jupyter wraps it and reads `src_dir/src_uri`), so the page's
        # source folder must hold a `notebooks/` folder: a link to `source` when it is elsewhere.
        files.append(
            File(
                f"notebooks/{notebook.name}",
                src_dir=str(_parent_of_notebooks(source)),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files
