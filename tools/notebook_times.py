"""How long a learner needs for each notebook: a stated model, printed and written into the docs.

A learner reads every cell, runs it, looks at what it shows and does one exercise. For each
main notebook (``notebooks/NN_*.ipynb``) the estimate is a range, from a quicker to a slower
learner, made of four parts:

* **prose**: the words of the markdown cells (link targets, images and code blocks left
  out) at ``PROSE_WPM`` = 150 to 200 words per minute. Brysbaert's meta-analysis of 190
  studies (J. Mem. Lang. 109, 2019, doi:10.1016/j.jml.2019.104047) puts adults' silent
  reading of English non-fiction at 238 wpm on average, most adults between 175 and 300,
  and slower for readers of English as a second language. Tutorial prose is technical,
  full of code names, and read to be understood and applied, so we stay below the
  average: 200 wpm for a quick reader, 150 for a careful one.
* **code**: the non-blank lines of the code cells (and of code blocks in markdown) at 4 to
  7.2 seconds a line, i.e. 900 to 500 lines an hour. 500 lines an hour is the "overview"
  rate of Fagan's code inspections (IBM Syst. J. 15(3), 1976), at which an author walks
  readers through code, which is what a tutorial does; careful defect-finding review is
  slower still (under 300-500 lines an hour in SmartBear's study at Cisco). The quick
  end is our judgement: most tutorial lines are prints, names and calls that repeat what
  the prose has just said.
* **outputs**: 15 to 30 seconds per code cell to run it and look at what it shows (a
  line, a table or a figure).
* **running**: the seconds the notebook's cells take on a CPU with the released
  model's shapes, recorded in ``tools/notebook_times.json`` (see ``--measure``). The
  tiny random model of the test harness is much faster; a checkpoint of random weights
  with exactly the released shapes has the real model's load and encode costs, which the
  learner waits for. Downloads on the first run are not
  included (784 MB of weights; see the notebooks' "Time and hardware" sections).
* **exercise**: one exercise, ``EXERCISE_MIN`` = 10 to 15 minutes.

"Reading" below is prose + code + outputs. Each end of a range is rounded to the nearest
5 minutes. ``--write`` puts the total into the "Time and hardware" section of each
notebook (the bullet that starts ``- About **``; the other bullets are kept), into
the time column of the README's notebook table and into the marked times of
``notebooks/INSTRUCTORS.md`` (``<!-- time:03 -->…<!-- /time -->``, sums as
``time:01+03``); ``tests/test_notebook_times.py`` fails when they disagree with the
estimate, e.g. after a notebook grew.

Usage (from the repository root)::

    python tools/notebook_times.py              # the table
    python tools/notebook_times.py --write      # rewrite the notebooks' bullet and the README
    python tools/notebook_times.py --measure [notebooks/0x_....ipynb ...]  # update the json

``--measure`` runs every main notebook as ``notebooks/test_notebooks.py`` does, twice: on
the tiny test model, and on a checkpoint with random weights of the released shapes
(written with ``benchmarks/run_benchmarks.py``'s helpers; about 10 minutes on 2 cores).
In 07 the BiomedCLIP stand-in stays tiny, so its running time is scaled from the two
full-size models to three.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
README = REPO / "README.md"
GUIDE = NOTEBOOKS / "INSTRUCTORS.md"
RECORDED = Path(__file__).with_suffix(".json")

PROSE_WPM = (200, 150)  # words per minute: quick reader, careful reader
CODE_S_PER_LINE = (4.0, 7.2)  # 900 and 500 lines an hour
OUTPUT_S_PER_CELL = (15, 30)
EXERCISE_MIN = (10, 15)
STEP = 5  # minutes: each end of a range is rounded to this

BULLET = re.compile(r"^- About \*\*.*?(?=^- |^\s*$|\Z)", re.M | re.S)
README_ROW = re.compile(r"^\| (\d\d) \|")
#: In the instructor guide: ``<!-- time:03 -->…<!-- /time -->``, ``time:01+03`` or ``time:all``.
GUIDE_TIME = re.compile(r"<!-- time:([\d+]+|all) -->(.*?)<!-- /time -->")


@dataclass(frozen=True)
class Counts:
    """What a learner reads in one notebook."""

    words: int  # prose words in markdown cells
    code_lines: int  # non-blank lines of code cells and markdown code blocks
    code_cells: int


@dataclass(frozen=True)
class Estimate:
    """Minutes for one notebook, each a (quick, slow) pair; ``total`` rounded to ``STEP``."""

    name: str
    counts: Counts
    reading: tuple[float, float]
    running: float
    exercise: tuple[int, int]
    suffix: str  # e.g. ", plus the downloads"

    @property
    def unrounded(self) -> tuple[float, float]:
        return tuple(r + self.running + x for r, x in zip(self.reading, self.exercise, strict=True))

    @property
    def total(self) -> tuple[int, int]:
        return rounded_range(*self.unrounded)


def round_to_step(minutes: float) -> int:
    return max(STEP, int(math.floor(minutes / STEP + 0.5)) * STEP)


def rounded_range(low: float, high: float) -> tuple[int, int]:
    lo, hi = round_to_step(low), round_to_step(high)
    return lo, max(hi, lo + STEP)


def main_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def count(notebook: nbformat.NotebookNode) -> Counts:
    """Prose words, code lines and code cells of a notebook."""
    words = code_lines = code_cells = 0
    for cell in notebook.cells:
        source = cell.source
        if cell.cell_type == "code":
            code_cells += 1
            code_lines += sum(1 for line in source.splitlines() if line.strip())
        elif cell.cell_type == "markdown":
            for block in re.findall(r"```.*?```", source, flags=re.S):
                code_lines += sum(1 for line in block.splitlines()[1:-1] if line.strip())
            text = re.sub(r"```.*?```", " ", source, flags=re.S)
            text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)  # images and badges
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links: their text only
            text = re.sub(r"<[^>]+>", " ", text)
            words += sum(1 for token in text.split() if re.search(r"\w", token))
    return Counts(words, code_lines, code_cells)


def recorded() -> dict:
    return json.loads(RECORDED.read_text(encoding="utf-8"))


def running_minutes(entry: dict) -> float:
    """Recorded seconds with the released shapes, scaled to all models where some were tiny."""
    tiny, real = entry["tiny_s"], entry["real_shape_s"]
    scale = entry.get("models", 1) / entry.get("real_shape_models", 1)
    return (tiny + (real - tiny) * scale) / 60


def estimate(path: Path, records: dict | None = None) -> Estimate:
    """The estimate for one notebook file."""
    entry = (records or recorded())["notebooks"][path.stem]
    c = count(nbformat.read(path, as_version=4))
    reading = tuple(
        c.words / wpm + c.code_lines * per_line / 60 + c.code_cells * per_cell / 60
        for wpm, per_line, per_cell in zip(
            PROSE_WPM, CODE_S_PER_LINE, OUTPUT_S_PER_CELL, strict=True
        )
    )
    return Estimate(
        path.stem, c, reading, running_minutes(entry), EXERCISE_MIN, entry.get("suffix", "")
    )


def bullet(e: Estimate) -> str:
    """The "Time and hardware" bullet, wrapped as the notebooks' markdown is."""
    lo, hi = e.total
    r_lo, r_hi = rounded_range(*e.reading)
    run = max(1, round(e.running))
    text = (
        f"- About **{lo}–{hi} minutes** to work through every cell and one exercise{e.suffix}: "
        f"reading {r_lo}–{r_hi}, running about {run} on a 2-core CPU, the exercise "
        f"{e.exercise[0]}–{e.exercise[1]}."
    )
    wrapped = textwrap.fill(
        text, 88, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
    )
    return wrapped + "\n"


def readme_time(e: Estimate) -> str:
    lo, hi = e.total
    return f"{lo}–{hi} min" + (" + downloads" if "download" in e.suffix else "")


def guide_time(key: str, estimates: dict[str, Estimate]) -> str:
    """The guide's text for a marker: one notebook ("03"), a sum ("01+03") or "all"."""
    chosen = list(estimates.values()) if key == "all" else [estimates[k] for k in key.split("+")]
    lo, hi = rounded_range(*(sum(e.unrounded[i] for e in chosen) for i in (0, 1)))
    downloads = any("download" in e.suffix for e in chosen)
    return f"{lo}–{hi} min" + (" + downloads" if downloads else "")


def _estimates(paths: list[Path] | None) -> dict[str, Estimate]:
    records = recorded()
    return {path.name[:2]: estimate(path, records) for path in paths or main_notebooks()}


def time_cell(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and "## Time and hardware" in cell.source:
            return cell
    raise LookupError("no markdown cell with '## Time and hardware'")


def notebook_bullet(path: Path) -> str:
    """The time bullet as it stands in a notebook."""
    section = time_cell(nbformat.read(path, as_version=4)).source.split("## Time and hardware")[1]
    match = BULLET.search(section)
    if not match:
        raise LookupError(f"{path.name}: no '- About **' bullet under 'Time and hardware'")
    return match.group(0)


def readme_times(readme: Path = README) -> dict[str, str]:
    """The README table's time column: notebook number ("01") -> text."""
    times = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        if README_ROW.match(line):
            cells = line.split("|")
            times[cells[1].strip()] = cells[4].strip()
    return times


def disagreements(
    paths: list[Path] | None = None, readme: Path = README, guide: Path = GUIDE
) -> list[str]:
    """Where a notebook's bullet, the README's time column or the guide's times differ from
    the estimate."""
    problems, column, estimates = [], readme_times(readme), _estimates(paths)
    for path in paths or main_notebooks():
        e = estimates[path.name[:2]]
        if notebook_bullet(path).strip() != bullet(e).strip():
            problems.append(f"{path.name}: the time bullet is not {bullet(e).strip()!r}")
        number = path.name[:2]
        if column.get(number) != readme_time(e):
            problems.append(
                f"README row {number}: time {column.get(number)!r}, not {readme_time(e)!r}"
            )
    if guide.exists():
        for match in GUIDE_TIME.finditer(guide.read_text(encoding="utf-8")):
            if match.group(2) != (want := guide_time(match.group(1), estimates)):
                problems.append(
                    f"{guide.name}: time:{match.group(1)} is {match.group(2)!r}, not {want!r}"
                )
    return problems


def write(paths: list[Path] | None = None, readme: Path = README, guide: Path = GUIDE) -> None:
    """Rewrite each notebook's time bullet, the README's time column and the guide's times."""
    times, estimates = {}, _estimates(paths)
    for path in paths or main_notebooks():
        e = estimates[path.name[:2]]
        times[path.name[:2]] = readme_time(e)
        notebook = nbformat.read(path, as_version=4)
        cell = time_cell(notebook)
        head, section = cell.source.split("## Time and hardware", 1)
        match = BULLET.search(section)
        section = section[: match.start()] + bullet(e) + section[match.end() :]
        cell.source = head + "## Time and hardware" + section
        nbformat.write(notebook, path)
    lines = readme.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        match = README_ROW.match(line)
        if match and match.group(1) in times:
            cells = line.split("|")
            cells[4] = f" {times[match.group(1)]} "
            lines[i] = "|".join(cells)
    readme.write_text("\n".join(lines), encoding="utf-8")
    if guide.exists():
        text = GUIDE_TIME.sub(
            lambda m: (
                f"<!-- time:{m.group(1)} -->{guide_time(m.group(1), estimates)}<!-- /time -->"
            ),
            guide.read_text(encoding="utf-8"),
        )
        guide.write_text(text, encoding="utf-8")


def table(paths: list[Path] | None = None) -> str:
    records = recorded()
    rows = [
        f"{'notebook':<38} {'words':>5} {'code':>4} {'cells':>5}  "
        f"{'reading':>7} {'running':>7} {'exercise':>8} {'total':>8}"
    ]
    for path in paths or main_notebooks():
        e = estimate(path, records)
        c = e.counts
        reading, exercise, total = (
            "–".join(map(str, r)) for r in (rounded_range(*e.reading), e.exercise, e.total)
        )
        rows.append(
            f"{path.name:<38} {c.words:>5} {c.code_lines:>4} {c.code_cells:>5}  "
            f"{reading:>7} {e.running:>7.1f} {exercise:>8} {total:>8}"
        )
    rows.append(
        f"minutes; reading = prose at {PROSE_WPM[0]}–{PROSE_WPM[1]} wpm + code at "
        f"{CODE_S_PER_LINE[0]}–{CODE_S_PER_LINE[1]} s/line + {OUTPUT_S_PER_CELL[0]}–"
        f"{OUTPUT_S_PER_CELL[1]} s per code cell; running recorded in {RECORDED.name} "
        f"({records['machine']})"
    )
    return "\n".join(rows)


# -- measuring the running times -------------------------------------------------------


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _real_shape_checkpoint(scratch: Path) -> Path:
    """A converted copy of random weights with the released shapes (its tokenizer inside)."""
    bench = _load(REPO / "benchmarks" / "run_benchmarks.py", "mmkd_bench")
    checkpoint, text = scratch / "MMKD_B16_random.pth", scratch / "bert"
    bench.write_random_checkpoint(checkpoint)
    bench.write_text_encoder(text)
    env = dict(os.environ, MMKD_HOME=str(scratch / "home"), MMKD_CHECKPOINT=str(checkpoint))
    env.update(MMKD_TEXT_ENCODER=str(text), HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-c", "import mmkd_utils; mmkd_utils.load_model()"],
                   env=env, check=True)  # fmt: skip
    return next(p for p in (scratch / "home" / "converted").iterdir() if p.is_dir())


def measure(real_shape: bool, paths: list[Path] | None = None) -> dict[str, float]:
    """Seconds per main notebook, run as the test harness runs it."""
    environment = _load(NOTEBOOKS / "conftest.py", "mmkd_nb_conftest")
    runner = _load(NOTEBOOKS / "test_notebooks.py", "mmkd_nb_runner")
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="mmkd_times_") as scratch:
        saved = dict(os.environ)
        if real_shape:  # the converted copy carries its own text config and tokenizer
            converted = str(_real_shape_checkpoint(Path(scratch)))
            os.environ.update(MMKD_CHECKPOINT=converted, MMKD_UNIMED_CHECKPOINT=converted)
        try:
            with environment.notebook_environment():
                for path in paths or main_notebooks():
                    start = time.perf_counter()
                    runner.run_notebook(path)
                    seconds[path.stem] = round(time.perf_counter() - start, 1)
                    print(f"{path.name}: {seconds[path.stem]} s", flush=True)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite notebooks and README")
    parser.add_argument("--check", action="store_true", help="exit 1 if they disagree")
    parser.add_argument("--measure", action="store_true", help="measure running times again")
    parser.add_argument("notebooks", nargs="*", type=Path, help="measure only these")
    args = parser.parse_args(argv)
    if args.measure:
        data, paths = recorded(), [p.resolve() for p in args.notebooks] or None
        tiny, real = measure(False, paths), measure(True, paths)
        for name in tiny:
            data["notebooks"][name].update(tiny_s=tiny[name], real_shape_s=real[name])
        data["machine"] = (
            f"{os.cpu_count()} cores ({platform.machine()}), load average "
            f"{os.getloadavg()[0]:.1f} after the runs, {datetime.date.today()}"
        )
        entries = ",\n".join(
            f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
            for k, v in data["notebooks"].items()
        )
        head = {k: v for k, v in data.items() if k != "notebooks"}
        text = json.dumps(head, indent=1, ensure_ascii=False)[:-2]
        RECORDED.write_text(f'{text},\n "notebooks": {{\n{entries}\n }}\n}}\n', "utf-8")
    if args.write:
        write()
    print(table())
    if args.check:
        problems = disagreements()
        print("\n".join(problems) or "notebooks and README agree with the estimate")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
