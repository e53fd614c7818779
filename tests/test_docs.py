"""The documentation site covers the API: every public name and subpackage, every notebook.

The site itself is built strictly in CI (`mkdocs build --strict`, `.ci/run`); these checks
catch a new public name or notebook that nobody added to a page, without needing mkdocs.
"""

import inspect
from pathlib import Path

import neurde

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api"


def _directives() -> set[str]:
    names = set()
    for page in API.glob("*.md"):
        for line in page.read_text().splitlines():
            if line.startswith("::: "):
                names.add(line[4:].strip())
    return names


def test_every_top_level_name_is_on_an_api_page():
    documented = _directives()
    missing = [
        f"neurde.{name}"
        for name in dir(neurde)
        if not name.startswith("_")
        and not inspect.ismodule(getattr(neurde, name))
        and f"neurde.{name}" not in documented
    ]
    assert not missing, f"add `::: NAME` to a page in docs/api/ for: {missing}"


def test_every_public_subpackage_has_a_page():
    """A family subpackage has its own page; `neurde.train`'s names, re-exported by `neurde`."""
    documented = _directives()
    subpackages = [
        name
        for name in dir(neurde)
        # `neurde.experiments` is the command line's, not API: it shows up here only when
        # another test in this process imported it.
        if not name.startswith("_")
        and name != "experiments"
        and hasattr(getattr(neurde, name), "__path__")
    ]
    assert "train" in subpackages and len(subpackages) == 7
    missing = [f"neurde.{name}" for name in subpackages if name != "train"]
    missing = [name for name in missing if name not in documented]
    train = [n for n in dir(neurde.train) if not n.startswith("_") and hasattr(neurde, n)]
    missing += [f"neurde.{n}" for n in train if not inspect.ismodule(getattr(neurde, n))
                and f"neurde.{n}" not in documented]  # fmt: skip
    assert not missing, f"no page in docs/api/ renders {missing}"


def test_every_notebook_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    missing = [name for name in notebooks if f"notebooks/{name}" not in nav]
    assert not missing, f"add these notebooks to mkdocs.yml's nav: {missing}"


def test_every_api_page_is_in_the_site_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [p.name for p in API.glob("*.md") if f"api/{p.name}" not in nav]
    assert not missing, f"add these pages to mkdocs.yml's nav: {missing}"
