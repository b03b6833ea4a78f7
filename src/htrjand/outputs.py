"""Where `htrjand recognize` writes, and writing it while the lines are read (docs/outputs.md).

`plan_outputs` checks the outputs before the model loads. `OutputStream` then takes the results
chunk by chunk: stdout rows go out at once, and a page file (PAGE/ALTO into `--output-dir`) or a
text file (`--format text --output-dir`) is written, atomically, as soon as its last line is read.
A TSV or JSON file holds every line, so it is written at the end; until then its results are
appended to a journal beside it (`results.json.partial`: JSON lines). A run stopped by Ctrl-C,
SIGTERM or a crash keeps its finished files and journals, and the same command with `--resume`
reads only the lines some output still lacks.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .datasets import layout
from .datasets.sample import DataError
from .writers import (TSV_HEADER, _same_file, json_text, link_image, text_lines, tsv, tsv_row, write_atomic,
                      write_page)

if TYPE_CHECKING:
    from .runtime import Result
    from .shards import Shard

FORMATS = ("auto", "text", "tsv", "json", "page", "alto")
PARTIAL = ".partial"  # suffix of a TSV/JSON output's journal


def _page_file(image) -> str | None:
    """The page file a recognised input came from (None for a line image)."""
    from .datasets import Sample

    if isinstance(image, Sample) and image.crop is not None and ":" in image.source:
        return image.source.rsplit(":", 1)[0]
    return None


def _relative(path: Path, inputs: Sequence[str]) -> Path:
    """`path` relative to the input folder it was found in, else its file name (a file that is a
    symbolic link keeps its place in the folder, not its target's)."""
    from .datasets import spec_of

    for item in inputs:
        base = spec_of(item).path
        if layout.is_glob(base) or not base.is_dir():
            continue
        for inside, folder in ((Path(os.path.abspath(path)), Path(os.path.abspath(base))),
                               (path.parent.resolve() / path.name, base.resolve())):
            try:
                return inside.relative_to(folder)
            except ValueError:
                continue
    return Path(path.name)


@dataclass
class OutputPlan:
    """Where `htrjand recognize` writes: `fmt` (never 'auto' for XML targets), the output folder,
    each page file's format, and the file each page file (XML formats) is written to."""

    fmt: str
    folder: Path | None
    pages: dict[str, str]
    targets: dict[str, Path]


def plan_outputs(images: Sequence, inputs: Sequence[str], fmt: str = "auto", folder: str | Path | None = None
                 ) -> OutputPlan:
    """Check the outputs before recognition: `--format page|alto` needs `--output-dir` and inputs of
    that format; two inputs may not write the same file, nor may a file be written over its input."""
    if fmt not in FORMATS:
        raise DataError(f"unknown output format {fmt!r} (known: {', '.join(FORMATS)})")
    folder = Path(folder) if folder else None
    pages: dict[str, str] = {}
    for image in images:
        xml = _page_file(image)
        if xml is not None and xml not in pages:
            pages[xml] = layout.root_format(Path(xml)) or "page"
    if fmt in ("page", "alto"):
        if folder is None:
            raise DataError(f"--format {fmt} writes page files: give --output-dir")
        for xml, kind in pages.items():
            if kind != fmt:
                raise DataError(f"{xml}: is {kind.upper() if kind == 'alto' else 'PAGE'}, not "
                                f"{fmt.upper() if fmt == 'alto' else 'PAGE'}: each page file is written back "
                                f"in its own format (PAGE <-> ALTO conversion is not supported)")
    targets: dict[str, Path] = {}
    if folder is not None and fmt in ("auto", "page", "alto"):
        owners: dict[Path, str] = {}
        for xml in pages:
            target = folder / _relative(Path(xml), inputs)
            if _same_file(target, Path(xml)):
                raise DataError(f"{xml}: --output-dir would overwrite this input file; give another folder")
            if target in owners:
                raise DataError(f"{xml} and {owners[target]} would both be written to {target}; "
                                f"recognise them into different --output-dir folders")
            owners[target] = xml
            targets[xml] = target
    return OutputPlan(fmt, folder, pages, targets)


# ---------------------------------------------------------------- TSV/JSON files and their journals

@dataclass
class Aggregate:
    """An output that holds every line (a TSV or JSON file, or one on stdout when `path` is None):
    `render(results)` gives its text from all the results, in input order."""

    path: Path | None
    render: Callable[[list[Result]], str]


def aggregates(plan: OutputPlan, json_path: str | None = None, shard: Shard | None = None,
               everything: Sequence = (), positions: Sequence[int] = ()) -> list[Aggregate]:
    """The TSV/JSON outputs of a job: `--format tsv|json` (into the output folder, else stdout;
    unsharded TSV on stdout is streamed row by row instead) and `--json FILE`. A shard (`shard`,
    reading `everything[positions]`) writes shard files for `htrjand merge-results`."""
    found: list[Aggregate] = []
    if shard is not None:
        from .shards import shard_json, shard_path, shard_tsv

        def as_json(results: list[Result]) -> str:
            return shard_json(results, positions, shard, everything)

        if plan.fmt in ("tsv", "json"):
            path = plan.folder / f"results.{shard.tag}.{plan.fmt}" if plan.folder else None
            found.append(Aggregate(path, as_json if plan.fmt == "json" else
                                   lambda results: shard_tsv(results, positions, shard, everything, plan.folder)))
        if json_path:
            found.append(Aggregate(shard_path(json_path, shard), as_json))
        return found
    if plan.fmt == "json":
        found.append(Aggregate(plan.folder / "results.json" if plan.folder else None, json_text))
    elif plan.fmt == "tsv" and plan.folder:
        found.append(Aggregate(plan.folder / "results.tsv", lambda results: tsv(results, plan.folder)))
    if json_path:
        found.append(Aggregate(Path(json_path), json_text))
    return found


class Journal:
    """The results of an unfinished TSV/JSON output, appended as they are read: `OUT.partial`, a
    header line (the job's item count and fingerprint) then one `{"index", "result"}` JSON line per
    line read. Removed once OUT is written."""

    def __init__(self, target: Path, items: Sequence):
        from .shards import fingerprint

        self.path = target.with_name(target.name + PARTIAL)
        self.head = {"htrjand_partial": 1, "items": len(items), "fingerprint": fingerprint(items)}
        self._file = None

    def load(self, items: Sequence) -> dict[int, Result]:
        """The results kept by a stopped run (none when there is no journal). A last line cut short
        by the stop is dropped; a journal of other inputs is refused."""
        from .runtime import Result, source_name

        try:
            lines = self.path.read_text(encoding="utf-8").split("\n")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{self.path}: cannot read this journal of a stopped run ({err})") from None
        try:
            head = json.loads(lines[0])
        except ValueError:
            head = None
        if not isinstance(head, dict) or head.get("htrjand_partial") != 1:
            raise DataError(f"{self.path}: not the journal of a stopped `htrjand recognize` run; remove it")
        if head != self.head:
            raise DataError(f"{self.path}: kept by a run over other inputs ({head.get('items')} lines, not "
                            f"{len(items)}, or other files); run without --resume to read everything again, "
                            f"or remove it")
        kept: dict[int, Result] = {}
        for number, line in enumerate(lines[1:], 2):
            if not line:
                continue
            try:
                record = json.loads(line)
                index, result = int(record["index"]), Result.from_dict(record["result"])
            except (ValueError, KeyError, TypeError):
                if number == len(lines):  # the last line, cut short when the run stopped
                    break
                raise DataError(f"{self.path}:{number}: not a journal record; remove the file to read "
                                f"every line again") from None
            if not 0 <= index < len(items) or result.source != source_name(items[index]):
                raise DataError(f"{self.path}:{number}: a result for another line than this job's line {index}; "
                                f"remove the file to read every line again")
            kept[index] = result
        return kept

    def open(self, kept: dict[int, Result]) -> None:
        """Start the journal with `kept` (a clean copy of what a stopped run left), then append."""
        write_atomic(self.path, json.dumps(self.head) + "\n" + "".join(self._line(i, r) for i, r in sorted(kept.items())))
        self._file = open(self.path, "a", encoding="utf-8")

    @staticmethod
    def _line(index: int, result: Result) -> str:
        return json.dumps({"index": index, "result": result.to_dict()}, ensure_ascii=False) + "\n"

    def append(self, pairs: Sequence[tuple[int, Result]]) -> None:
        if self._file is not None:
            self._file.write("".join(self._line(i, r) for i, r in pairs))
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self, finished: bool = False) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if finished:
            self.path.unlink(missing_ok=True)


def _finished_json(path: Path, items: Sequence) -> dict[int, Result] | None:
    """The results a finished run wrote to `path` (a JSON list, or a shard's JSON file) for these
    items, or None."""
    from .runtime import Result, source_name
    from .shards import MARK

    try:
        records = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(records, dict) and MARK in records:
            records = [r["result"] for r in records["results"]]
        if len(records) == len(items) and all(r["image"] == source_name(x) for r, x in zip(records, items)):
            return {i: Result.from_dict(r) for i, r in enumerate(records)}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


# ---------------------------------------------------------------- writing as the lines are read

class OutputStream:
    """Writes a `recognize` job's outputs while its lines are read: `todo` (item indices to read),
    then `add(indices, results)` per chunk, then `finish()` (or `close()` when the job stops early).

    With `resume`, a page or text file that exists is not written again, and a TSV/JSON output keeps
    the results its journal holds (a JSON file a finished run wrote counts too); a line is read again
    only if some output lacks it (stdout has no memory: lines listed there are always read)."""

    def __init__(self, plan: OutputPlan, items: Sequence, inputs: Sequence[str], *, json_path: str | None = None,
                 shard: Shard | None = None, everything: Sequence = (), positions: Sequence[int] = (),
                 resume: bool = False, words: bool = True, glyphs: bool = False, creator: str = "htrjand",
                 out: TextIO | None = None, report: Callable[[Path], None] | None = None):
        self.plan, self.items = plan, items
        self.words, self.glyphs, self.creator = words, glyphs, creator
        self.out, self.report = out or sys.stdout, report or (lambda path: None)
        self.written: list[Path] = []
        self.files: dict[Path, list[int]] = {}  # a page or text file -> the items it holds
        self.page_of: dict[Path, str] = {}  # a page target -> the page file it copies
        listed: list[int] = []  # items whose rows go to stdout as they are read
        fmt, folder = plan.fmt, plan.folder
        for i, item in enumerate(items):
            xml = _page_file(item)
            if fmt in ("auto", "page", "alto") and xml in plan.targets:
                self.files.setdefault(plan.targets[xml], []).append(i)
                self.page_of[plan.targets[xml]] = xml
            elif fmt == "text" and folder is not None:
                source = xml or (str(item) if isinstance(item, (str, Path)) else getattr(item, "source", str(i)))
                self.files.setdefault(folder / _relative(Path(source), inputs).with_suffix(".txt"), []).append(i)
            elif fmt in ("auto", "page", "alto", "text") or (fmt == "tsv" and shard is None and folder is None):
                listed.append(i)
        self.listed = set(listed)
        self.tsv_rows = fmt == "tsv" and shard is None and folder is None  # stdout TSV, streamed
        self.aggregates = aggregates(plan, json_path, shard, everything, positions)
        self.journals = {a.path: Journal(a.path, items) for a in self.aggregates if a.path is not None}
        self.kept: dict[Path, dict[int, Result]] = {}
        if resume:
            if not self.files and not self.journals:
                raise DataError("--resume continues a run that writes files: give --output-dir (or --json)")
            for path, journal in self.journals.items():
                kept = journal.load(items)
                if not kept and not journal.path.exists() and path.exists():
                    kept = _finished_json(path, items) or {}
                self.kept[path] = kept
            self.files = {path: part for path, part in self.files.items() if not path.exists()}
        else:
            self.kept = {path: {} for path in self.journals}
        unwritten = {i for part in self.files.values() for i in part}  # lines of page/text files still to write
        whole = any(a.path is None for a in self.aggregates)
        self.todo = [i for i in range(len(items))
                     if not resume or whole or i in self.listed or i in unwritten
                     or any(i not in kept for kept in self.kept.values())]
        self._left = {path: len(part) for path, part in self.files.items()}
        self._file_of = {i: path for path, part in self.files.items() for i in part}
        self._held: dict[int, Result] = {}  # results of files not yet written, and for the aggregates
        for path, journal in self.journals.items():
            journal.open(self.kept[path])
        if self.tsv_rows:
            self.out.write(TSV_HEADER)

    def add(self, indices: Sequence[int], results: Sequence[Result]) -> None:
        """The results of items `indices` (a chunk, in input order): stdout rows now, journals
        appended, page and text files whose last line this was written."""
        pairs = list(zip(indices, results))
        rows = [r for i, r in pairs if i in self.listed]
        if rows or self.tsv_rows:
            self.out.write("".join(tsv_row(r) for _, r in pairs) if self.tsv_rows else text_lines(rows))
            self.out.flush()
        for path, journal in self.journals.items():
            journal.append([(i, r) for i, r in pairs if i not in self.kept[path]])
        keep_all = bool(self.aggregates)
        for i, r in pairs:
            path = self._file_of.get(i)
            if path is not None or keep_all:
                self._held[i] = r
            if path is not None:
                self._left[path] -= 1
                if self._left[path] == 0:
                    self._write_file(path)
                    if not keep_all:
                        for j in self.files[path]:
                            self._held.pop(j, None)

    def _write_file(self, path: Path) -> None:
        part = self.files[path]
        if path in self.page_of:
            doc = layout.load_page(Path(self.page_of[path]))
            found, crops = {}, {}
            for i in part:
                result, item = self._held[i], self.items[i]
                if result.error is None:
                    key = item.line_id or item.source
                    found[key], crops[key] = result, item.crop
            write_page(doc, found, path, words=self.words, glyphs=self.glyphs, creator=self.creator, crops=crops)
            link_image(doc, path)
        else:
            write_atomic(path, text_lines([self._held[i] for i in part], sources=False))
        self.written.append(path)
        self.report(path)

    def finish(self) -> list[Path]:
        """Write the TSV/JSON outputs (every line read or kept) and remove their journals."""
        for a in self.aggregates:
            kept = self.kept.get(a.path, {}) if a.path is not None else {}
            results = [kept[i] if i in kept else self._held[i] for i in range(len(self.items))]
            text = a.render(results)
            if a.path is None:
                self.out.write(text)
            else:
                self.written.append(write_atomic(a.path, text))
                self.journals[a.path].close(finished=True)
                self.report(a.path)
        return self.written

    def close(self) -> None:
        """Stop early: journals stay for `--resume`, finished files stay as they are."""
        for journal in self.journals.values():
            journal.close()

    def summary(self) -> str:
        """What a stopped run keeps, for its message."""
        parts = [f"{len(self.written)} file{'s' * (len(self.written) != 1)} written"] if self.files else []
        parts += [f"{j.path} keeps the lines read" for j in self.journals.values()]
        return ", ".join(parts) or "nothing kept"


__all__ = ["FORMATS", "Aggregate", "Journal", "OutputPlan", "OutputStream", "aggregates", "plan_outputs"]
