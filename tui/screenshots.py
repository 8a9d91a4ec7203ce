"""Render the console's main screens to SVG, with the app itself, from the samples.

    python -m tui.screenshots [OUTPUT_DIR]     (default: screenshots/)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tui.samples import sample_app

SIZE = (120, 36)  # wide enough for the two-column layout
SCREENS = (
    # file name, sample, keys pressed before the shot
    ("running.svg", "running", ()),
    ("gate.svg", "gate", ()),
    ("copy.svg", "copy", ()),
    ("finished.svg", "finished", ()),
    ("planned.svg", "planned", ()),
    ("help.svg", "running", ("question_mark",)),
    ("errors.svg", "errors", ()),
)


async def render(sample: str, keys: tuple[str, ...] = (), size: tuple[int, int] = SIZE) -> str:
    app = sample_app(sample)
    async with app.run_test(size=size) as pilot:
        await pilot.press(*keys)
        await pilot.pause()
        return app.export_screenshot(title=f"migrate-tui · {sample}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    for name, sample, keys in SCREENS:
        (out / name).write_text(asyncio.run(render(sample, keys)), encoding="utf-8")
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
