"""Execute every example notebook once, in parallel; write the executed copies to a folder.

    python docs/execute_notebooks.py OUT_DIR [--jobs N] [--timeout S]

CI runs this instead of a separate notebook test: a notebook that raises fails the run (exit
status 1, with the failing cell's error), and the executed copies, outputs and figures included,
become the site's notebook pages (`NEURDE_DOCS_NOTEBOOKS=OUT_DIR mkdocs build --strict`).
"""

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(path: Path, out_dir: Path, timeout: int) -> tuple[str, float, str | None]:
    """Run one notebook in its own folder; return (name, seconds, error or None)."""
    start = time.perf_counter()
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = str(exc)
    nbformat.write(notebook, out_dir / path.name)
    return path.name, time.perf_counter() - start, error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--jobs", type=int, default=2, help="notebooks run at once (default 2)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    failed = []
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(execute, p, args.out_dir, args.timeout) for p in paths]
        for future in futures:
            name, seconds, error = future.result()
            print(f"{name}: {'FAILED' if error else 'ok'} in {seconds:.0f} s", flush=True)
            if error:
                failed.append(name)
                print(error, file=sys.stderr)
    print(f"{len(paths) - len(failed)} of {len(paths)} notebooks ran without error")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
