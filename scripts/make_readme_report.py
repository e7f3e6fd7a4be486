"""Regenerate the example report: docs/report-example/{main_table.md,paired_scatter.png}.

By default it runs the default protocol (`bench run`: emoji test split, 5-way, 15 queries,
600 stored episodes, EfficientNet-Lite0, tune=norm) at 1 and 5 shots with query embeddings
of the first 5 episodes saved, then `bench report` on the two runs, and copies the main
table and the paired CE-vs-SCHaNe scatter into docs/report-example/ (shown by README.md and by
docs/reports.md, whose report-example block it rewrites). Finished runs in the
work folder are reused, so a second call only redraws. On a 2-core CPU the two runs take
about 7 and 15 minutes.

    .venv/bin/python scripts/make_readme_report.py                 # run + report
    .venv/bin/python scripts/make_readme_report.py --runs A B      # report existing runs
    .venv/bin/python scripts/make_readme_report.py --episodes 100  # quicker, wider intervals

The full report (HTML, Markdown, every figure) stays in <work>/report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
MAX_PNG_BYTES = 150_000
README_DPI = 110  # the report's PNGs are 300 dpi (print); the README's copy is scaled down


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", help="Report these run folders instead of running.")
    ap.add_argument("--shots", default="1,5", help="Comma list of shots to run (default 1,5).")
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--embeddings", type=int, default=5, help="Episodes whose query embeddings are saved.")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--work", default=str(ROOT / "results" / "readme-example"),
                    help="Folder for the runs and the full report (default results/readme-example).")
    ap.add_argument("--dest", default=str(ROOT / "docs" / "report-example"),
                    help="Where the committed table and figure go (default docs/report-example).")
    args = ap.parse_args(argv)

    from fewshot_bench.config import RunConfig
    from fewshot_bench.report import build_report

    work = Path(args.work)
    if args.runs:
        runs = [Path(r) for r in args.runs]
    else:
        from fewshot_bench.runner import run

        runs = []
        for shots in (int(s) for s in args.shots.split(",")):
            out = work / f"emoji-5w{shots}s-{args.episodes}e"
            if _finished(out):
                print(f"reusing {out}", file=sys.stderr)
            else:
                if out.exists():
                    shutil.rmtree(out)  # an unfinished earlier attempt of this script
                cfg = RunConfig(shots=shots, episodes=args.episodes, embeddings=args.embeddings,
                                device=args.device, out=str(out),
                                episodes_dir=str(ROOT / "episodes"))
                print(run(cfg, progress=sys.stderr.isatty(), echo=lambda m: print(m, file=sys.stderr)).text)
            runs.append(out)

    report = build_report(runs, work / "report", ["md", "csv", "html"],
                          title="fewshot-bench: SCHaNe vs CE, emoji 5-way, EfficientNet-Lite0")
    print(report.text)

    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    png = work / "report" / "figures" / "paired_scatter.png"
    shutil.copyfile(work / "report" / "main_table.md", dest / "main_table.md")
    _copy_scaled(png, dest / "paired_scatter.png", README_DPI)
    _update_readme(ROOT / "docs" / "reports.md", (dest / "main_table.md").read_text(), dest)
    size = (dest / "paired_scatter.png").stat().st_size
    print(f"wrote {dest / 'main_table.md'} and {dest / 'paired_scatter.png'} ({size / 1000:.0f} KB)")
    if size > MAX_PNG_BYTES:
        print(f"warning: the figure is over {MAX_PNG_BYTES // 1000} KB; keep committed images small",
              file=sys.stderr)
        return 1
    return 0


def _copy_scaled(src: Path, dst: Path, dpi: int) -> None:
    """Copy the PNG `src` to `dst` resampled to `dpi` (the report writes print resolution)."""
    from PIL import Image

    with Image.open(src) as im:
        scale = dpi / float((im.info.get("dpi") or (dpi,))[0])
        if scale >= 1:
            shutil.copyfile(src, dst)
            return
        size = (round(im.width * scale), round(im.height * scale))
        small = im.convert("RGB").resize(size, Image.LANCZOS)
        small.quantize(256).save(dst, optimize=True, dpi=(dpi, dpi))  # a palette keeps it small


BEGIN, END = "<!-- report-example:begin -->", "<!-- report-example:end -->"


def _update_readme(readme: Path, table: str, dest: Path) -> None:
    """Replace the block between the report-example markers in `readme` (docs/reports.md),
    if it has them."""
    text = readme.read_text() if readme.is_file() else ""
    if BEGIN not in text or END not in text:
        print(f"note: {readme} has no {BEGIN} ... {END} block; paste {dest / 'main_table.md'} by hand",
              file=sys.stderr)
        return
    try:
        rel = dest.resolve().relative_to(readme.resolve().parent).as_posix()
    except ValueError:
        rel = dest.as_posix()
    block = (f"{BEGIN}\n{table.rstrip()}\n\n![Per-episode accuracy, SCHaNe against CE on the same "
             f"episodes]({rel}/paired_scatter.png)\n{END}")
    head, rest = text.split(BEGIN, 1)
    readme.write_text(head + block + rest.split(END, 1)[1])
    print(f"updated the example in {readme}")


def _finished(out: Path) -> bool:
    try:
        return "finished" in json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
