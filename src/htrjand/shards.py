"""Sharded recognition: `htrjand recognize --shard K/N` reads one share of the inputs; `htrjand
merge-results` puts the shards' JSON or TSV results back together, in input order (docs/reliability.md).

Every shard expands the same inputs into the same list of items (line images and page lines), then
keeps the items of its *files*: the lines of one PAGE/ALTO file stay together, so each page file is
written by exactly one shard. Files go to shards by size (most lines first, each to the shard with
the fewest lines so far; ties by path), which is deterministic and keeps the shards' work even.
A shard's JSON/TSV carries its number, the shard count, the item count and a fingerprint of the
whole item list, and each result its position in that list, so that the merge can restore the order
and check that the shards are complete, disjoint and were run on the same inputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .datasets.sample import DataError

if TYPE_CHECKING:
    from .runtime import Result

# (rank, world size) variables, first found wins: SLURM tasks (srun), then torchrun / other launchers
SHARD_ENV = (("SLURM_PROCID", "SLURM_NTASKS"), ("RANK", "WORLD_SIZE"))
MARK = "htrjand_shard"  # the JSON key / TSV comment that makes a file a shard file
_TSV_HEAD = re.compile(r"^# htrjand shard (\{.*\})$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @property
    def tag(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> Shard:
    """`K/N` (0 <= K < N), or `auto`: K and N from SLURM_PROCID/SLURM_NTASKS or RANK/WORLD_SIZE
    (one shard of one when neither is set). Raises ValueError with the reason."""
    environ = os.environ if environ is None else environ
    if text == "auto":
        for rank, world in SHARD_ENV:
            if rank in environ and world in environ:
                text, where = f"{environ[rank]}/{environ[world]}", f" (from {rank}/{world})"
                break
        else:
            return Shard(0, 1)
    else:
        where = ""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"--shard {text!r}{where}: expected K/N, e.g. 0/4, or auto")
    shard = Shard(int(m.group(1)), int(m.group(2)))
    if shard.count < 1 or shard.index >= shard.count:
        raise ValueError(f"--shard {text}{where}: K must be 0..N-1 and N at least 1")
    return shard


def _file_of(item) -> str:
    """The file an item comes from: its page file for a page line, else the image itself."""
    from .outputs import _page_file

    return _page_file(item) or str(getattr(item, "image", item))


def _key(item) -> str:
    """What identifies an item in the fingerprint: path, or page file and line id/source."""
    line_id = getattr(item, "line_id", None)
    return f"{_file_of(item)}#{line_id or getattr(item, 'source', '')}" if hasattr(item, "crop") else str(item)


def fingerprint(items: Sequence) -> str:
    """A short hash of the expanded item list (the same in every shard of one job)."""
    return hashlib.sha1("\n".join(map(_key, items)).encode("utf-8")).hexdigest()[:16]


def assign(items: Sequence, count: int) -> list[int]:
    """The shard of every item: whole files, the largest first, each to the least loaded shard."""
    sizes: dict[str, int] = {}
    for item in items:
        name = _file_of(item)
        sizes[name] = sizes.get(name, 0) + 1
    load, owner = [0] * count, {}
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        target = min(range(count), key=lambda k: (load[k], k))
        owner[name] = target
        load[target] += sizes[name]
    return [owner[_file_of(item)] for item in items]


def select(items: Sequence, shard: Shard) -> list[int]:
    """Positions (in input order) of the items that `shard` reads."""
    return [i for i, k in enumerate(assign(items, shard.count)) if k == shard.index]


def shard_path(path: str | Path, shard: Shard) -> Path:
    """`out.json` -> `out.shard-K-of-N.json` (kept as is when it already names this shard)."""
    path = Path(path)
    if shard.tag in path.name:
        return path
    return path.with_name(f"{path.stem}.{shard.tag}{path.suffix}" if path.suffix else f"{path.name}.{shard.tag}")


def _header(shard: Shard, items: Sequence, positions: Sequence[int], fmt: str) -> dict:
    return {"shard": shard.index, "shards": shard.count, "inputs": len(items), "items": len(positions),
            "fingerprint": fingerprint(items), "format": fmt}


def shard_json(results: Sequence[Result], positions: Sequence[int], shard: Shard, items: Sequence) -> str:
    """A shard's results as JSON: the shard header and `[{"index": position, "result": {...}}]`."""
    records = [{"index": i, "result": r.to_dict()} for i, r in zip(positions, results)]
    return json.dumps({MARK: _header(shard, items, positions, "json"), "results": records},
                      indent=2, ensure_ascii=False) + "\n"


def shard_tsv(results: Sequence[Result], positions: Sequence[int], shard: Shard, items: Sequence,
              folder: Path | None = None) -> str:
    """A shard's results as the TSV manifest `writers.tsv` writes, with the item's position as a
    fourth column and the shard header as a first comment line."""
    from .writers import TSV_HEADER, tsv_row

    head = json.dumps(_header(shard, items, positions, "tsv"), separators=(",", ":"))
    lines = [f"# htrjand shard {head}", TSV_HEADER.rstrip("\n").replace("\tconfidence", "\tconfidence\tindex")]
    lines += [tsv_row(r, folder).rstrip("\n") + f"\t{i}" for i, r in zip(positions, results) if r.error is None]
    return "".join(line + "\n" for line in lines)


def _read(path: Path) -> tuple[dict, list[tuple[int, object]]]:
    """A shard file's header and its (position, record) pairs: a result dict (JSON) or a TSV row."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if text.startswith("# htrjand shard "):
        lines = text.splitlines()
        m = _TSV_HEAD.match(lines[0])
        head = json.loads(m.group(1)) if m else None
        rows = []
        for number, line in enumerate(lines[2:], 3):
            row, _, index = line.rpartition("\t")
            if not row or not index.isdigit():
                raise DataError(f"{path}:{number}: not a shard TSV row (image, text, confidence, index)")
            rows.append((int(index), row))
        return head, rows
    try:
        data = json.loads(text)
        head = data[MARK]
        return head, [(int(r["index"]), r["result"]) for r in data["results"]]
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a shard file of `htrjand recognize --shard` ({err.__class__.__name__}: "
                        f"{err})") from None


def _rebase(row: str, source: Path, target: Path) -> str:
    """A TSV row whose relative image path is relative to `source`'s folder, made relative to `target`'s."""
    image, sep, rest = row.partition("\t")
    if Path(image).is_absolute() or re.search(r":\d+$", image) or source.parent.resolve() == target.parent.resolve():
        return row
    return os.path.relpath(source.parent.resolve() / image, target.parent.resolve()) + sep + rest


def merge(out: str | Path, paths: Sequence[str | Path]) -> dict:
    """Merge shard files (all JSON or all TSV) into `out` in input order, as one unsharded run
    writes it. Refuses shards of other jobs (count, inputs or fingerprint differ), a shard given
    twice, overlapping shards and missing shards, naming the files."""
    from .writers import write_atomic

    out = Path(out)
    if not paths:
        raise DataError("merge-results: give the shard files to merge")
    shards: dict[int, Path] = {}
    items: dict[int, int] = {}  # shard -> items it read
    first: dict | None = None
    seen: dict[int, Path] = {}
    records: list[tuple[int, object, Path]] = []
    for path in map(Path, paths):
        head, rows = _read(path)
        if not isinstance(head, dict) or not {"shard", "shards", "inputs", "items", "fingerprint", "format"} <= set(head):
            raise DataError(f"{path}: not a shard file of `htrjand recognize --shard` (no shard header)")
        if first is None:
            first, first_path = head, path
        for key in ("shards", "inputs", "fingerprint", "format"):
            if head[key] != first[key]:
                raise DataError(f"{path} and {first_path} are not shards of the same job: {key} "
                                f"{head[key]} vs {first[key]}")
        if head["shard"] in shards:
            raise DataError(f"shard {head['shard']}/{head['shards']} given twice: {shards[head['shard']]} and {path}")
        shards[head["shard"]], items[head["shard"]] = path, head["items"]
        if head["format"] == "json" and len(rows) != head["items"]:
            raise DataError(f"{path}: holds {len(rows)} results, its header says {head['items']} (truncated?)")
        for index, record in rows:
            if index in seen:
                raise DataError(f"input {index} is in two shards: {seen[index]} and {path}")
            seen[index] = path
            records.append((index, record, path))
    count = first["shards"]
    missing = sorted(set(range(count)) - set(shards))
    if missing:
        names = ", ".join(f"{k}/{count}" for k in missing)
        raise DataError(f"missing shard{'s' if len(missing) > 1 else ''} {names}: give every shard's file "
                        f"(found {len(shards)} of {count})")
    total = sum(items.values())
    if total != first["inputs"]:
        raise DataError(f"the shards hold {total} inputs, the job had {first['inputs']}")
    records.sort(key=lambda r: r[0])
    if first["format"] == "json":  # as `writers.json_text` writes an unsharded run's results
        text = json.dumps([r for _, r, _ in records], indent=2, ensure_ascii=False) + "\n"
    else:
        header = "# image\ttext\tconfidence (htrjand recognize)"
        text = "".join(line + "\n" for line in [header] + [_rebase(r, p, out) for _, r, p in records])
    write_atomic(out, text)
    return {"output": str(out), "shards": first["shards"], "inputs": first["inputs"], "format": first["format"],
            "records": len(records)}


__all__ = ["SHARD_ENV", "Shard", "assign", "fingerprint", "merge", "parse_shard", "select", "shard_json",
           "shard_path", "shard_tsv"]
