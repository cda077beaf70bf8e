"""Regenerate the README's widget screenshots (``docs/img/``) from the real-browser test.

``tests/widgets/test_browser.py::test_slider_regenerates_in_jupyterlab`` runs a notebook
in JupyterLab and headless Chromium (the embedded SmolLM2, a 46-neuron circuit): it steers
the slider to 0, zooms and clicks the heatmap, opens "Where does it fire?", runs the
explorer's Discover and lists a Venn region, saving a screenshot of each step to
``test-artifacts/``. This script runs that test, then copies the chosen screenshots to
``docs/img/`` and prints their sizes (the README keeps each under 150 KB).

Screenshots (``--only`` picks some; default: all):

- ``steering-slider``, ``difference-heatmap``, ``prompt-editor``, ``explorer``,
  ``circuit-venn``: the JupyterLab window (1400 x 1100) at each step;
- ``slider-divergence``: the slider's output cropped to the widget, with the first
  divergent token and both models' top next tokens;
- ``token-view``: the top of the heatmap's token view for the clicked neuron.

Needs ``/usr/bin/chromium`` and the ``playwright`` package, as the test does (about a
minute and a half on 2 cores).

Example:
    python scripts/widget_screenshots.py --only token-view slider-divergence
    python scripts/widget_screenshots.py --no-run   # copy what test-artifacts/ holds
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
IMAGES = ROOT / "docs" / "img"
TEST = "tests/widgets/test_browser.py::test_slider_regenerates_in_jupyterlab"
NAMES = ("steering-slider", "slider-divergence", "difference-heatmap", "token-view",
         "prompt-editor", "explorer", "circuit-venn")
#: Largest size of a README screenshot, in bytes.
LIMIT = 150_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES),
                        help="the screenshots to copy (default: all)")
    parser.add_argument("--no-run", action="store_true",
                        help="copy the screenshots test-artifacts/ holds; run nothing")
    args = parser.parse_args(argv)
    started = 0.0
    if not args.no_run:
        started = time.time()
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", TEST]
        if subprocess.run(command, cwd=ROOT, env=env).returncode != 0:
            print("the browser test failed: nothing copied", file=sys.stderr)
            return 1
    # A skipped test (no Chromium or playwright) leaves older screenshots, or none.
    missing = [name for name in args.only if not (ARTIFACTS / f"{name}.png").is_file()
               or (ARTIFACTS / f"{name}.png").stat().st_mtime < started]
    if missing:
        print(f"not made in {ARTIFACTS} by this run: {', '.join(missing)}", file=sys.stderr)
        return 1
    IMAGES.mkdir(parents=True, exist_ok=True)
    too_large = []
    for name in args.only:
        target = IMAGES / f"{name}.png"
        shutil.copyfile(ARTIFACTS / f"{name}.png", target)
        size = target.stat().st_size
        print(f"{target.relative_to(ROOT)}: {size / 1000:.0f} KB")
        if size > LIMIT:
            too_large.append(name)
    if too_large:
        print(f"over {LIMIT // 1000} KB: {', '.join(too_large)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
