"""The seeded export generator: determinism, format and quirks, distributions, dirty rows, the CLI."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atelier_etl import generate as generate_module
from atelier_etl.generate import FILES, HEADERS, Options, generate, main
from atelier_etl.generate_dirty import CHARACTERISTIC_NAMES, KINDS

DATE_MIN, DATE_MAX = 1_577_836_800_000, 1_640_995_200_000  # 2020-01-01 .. 2022-01-01 UTC, epoch ms
BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
QUOTED = r'"(?:[^"]|"")*"'
# One whole record of each file as data.md's sample rows write it: numbers and booleans bare, strings
# always quoted, a missing response as the bare word null.
RECORD = {
    "reviews.csv": re.compile(
        rf"\d+,\d+,[1-5],\d{{13}},{QUOTED},{QUOTED},(?:true|false),(?:true|false),{QUOTED},{QUOTED},"
        rf"(?:null|{QUOTED}),\d+\n"
    ),
    "reviews_photos.csv": re.compile(r'\d+,\d+,"https://[^"]+"\n'),
    "characteristics.csv": re.compile(r'\d+,\d+,"(?:Fit|Length|Comfort|Quality|Size|Width)"\n'),
    "characteristic_reviews.csv": re.compile(r"\d+,\d+,\d+,[1-5]\n"),
}


def export(folder: Path, **options: Any) -> Path:
    generate(Options(out=folder, **options))
    return folder


def read(folder: Path, name: str) -> list[list[str]]:
    """Every record of a file (header first), as the csv module parses it."""
    with open(folder / name, encoding="utf-8-sig", newline="") as file:
        return list(csv.reader(file))


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(tmp_path_factory.mktemp("clean"), products=2_000)


@pytest.fixture(scope="module")
def tables(clean: Path) -> dict[str, list[list[str]]]:
    return {name: read(clean, name)[1:] for name in FILES}


def test_same_arguments_give_the_same_bytes(tmp_path: Path) -> None:
    options = {"products": 400, "dirty_rate": 0.05, "bom": True, "crlf": True, "mixed_booleans": True}
    first = digests(export(tmp_path / "a", **options))
    assert first == digests(export(tmp_path / "b", **options))
    other_seed = digests(export(tmp_path / "c", seed=7, **options))
    assert all(other_seed[name] != first[name] for name in FILES)


def test_headers_and_column_counts(clean: Path) -> None:
    for name in FILES:
        header, *rows = read(clean, name)
        assert header == HEADERS[name].split(",")
        assert rows
        assert {len(row) for row in rows} == {len(header)}, name


def test_records_are_written_like_the_sample_rows(clean: Path) -> None:
    for name in FILES:
        text = (clean / name).read_text(encoding="utf-8")
        assert text.startswith(HEADERS[name] + "\n")
        position, records = len(HEADERS[name]) + 1, 0
        while position < len(text):
            match = RECORD[name].match(text, position)
            assert match, f"{name}: unexpected record {text[position : position + 200]!r}"
            position, records = match.end(), records + 1
        assert records == len(read(clean, name)) - 1


def test_ids_rise_in_product_order_with_gaps(tables: dict[str, list[list[str]]]) -> None:
    """data.md: ids are not guaranteed dense. Each file's ids rise, start at 1, and skip some numbers
    (before about one product in 16)."""
    for name in FILES:
        ids = [int(row[0]) for row in tables[name]]
        assert ids[0] == 1 and all(a < b for a, b in zip(ids, ids[1:], strict=False)), name
        gaps = sum(b - a > 1 for a, b in zip(ids, ids[1:], strict=False))
        assert 2_000 / 16 * 0.5 < gaps < 2_000 / 16 * 1.5, (name, gaps)
    for name in ("reviews.csv", "characteristics.csv"):
        product_ids = [int(row[1]) for row in tables[name]]
        assert product_ids == sorted(product_ids)


def test_distributions_match_the_export(tables: dict[str, list[list[str]]]) -> None:
    reviews, photos = tables["reviews.csv"], tables["reviews_photos.csv"]
    reviews_per_product = Counter(int(review[1]) for review in reviews)
    names_per_product = defaultdict(list)
    for _, product_id, name in tables["characteristics.csv"]:
        names_per_product[int(product_id)].append(name)

    assert set(names_per_product) == set(range(1, 2_001))
    assert 4.5 <= len(reviews) / 2_000 <= 7
    assert 2_000 - len(reviews_per_product) >= 50  # products without reviews, with characteristics
    assert max(reviews_per_product.values()) >= 40  # the long tail
    assert {len(names) for names in names_per_product.values()} == {3, 4, 5}
    assert 3.25 <= sum(map(len, names_per_product.values())) / 2_000 <= 3.45
    assert all(len(set(names)) == len(names) for names in names_per_product.values())
    assert {name for names in names_per_product.values() for name in names} == set(CHARACTERISTIC_NAMES)
    assert 0.40 <= len(photos) / len(reviews) <= 0.55
    assert max(Counter(photo[1] for photo in photos).values()) <= 5

    responses = Counter("none" if review[10] in ("null", "") else "some" for review in reviews)
    assert 0.07 <= responses["some"] / len(reviews) <= 0.13
    assert 0.005 <= sum(review[7] == "true" for review in reviews) / len(reviews) <= 0.03
    assert 0.70 <= sum(review[6] == "true" for review in reviews) / len(reviews) <= 0.80
    assert sum(int(review[11]) <= 30 for review in reviews) / len(reviews) >= 0.9
    assert all(DATE_MIN <= int(review[3]) < DATE_MAX for review in reviews)
    assert {review[3][:2] for review in reviews} == {"15", "16"}  # ms, not seconds


def test_every_review_rates_every_characteristic_of_its_product(tables: dict[str, list[list[str]]]) -> None:
    product_of_review = {int(review[0]): int(review[1]) for review in tables["reviews.csv"]}
    product_of_characteristic = {int(row[0]): int(row[1]) for row in tables["characteristics.csv"]}
    characteristics_of_product = defaultdict(set)
    for characteristic_id, product_id in product_of_characteristic.items():
        characteristics_of_product[product_id].add(characteristic_id)

    rated = defaultdict(list)
    for _, characteristic_id, review_id, value in tables["characteristic_reviews.csv"]:
        rated[int(review_id)].append(int(characteristic_id))
        assert 1 <= int(value) <= 5
    assert set(rated) == set(product_of_review)
    for review_id, characteristic_ids in rated.items():
        assert sorted(characteristic_ids) == sorted(characteristics_of_product[product_of_review[review_id]])
    assert 3.2 <= len(tables["characteristic_reviews.csv"]) / len(product_of_review) <= 3.5
    assert {int(photo[1]) for photo in tables["reviews_photos.csv"]} <= set(product_of_review)


def test_text_carries_the_format_quirks(clean: Path, tables: dict[str, list[list[str]]]) -> None:
    reviews = tables["reviews.csv"]
    summaries, bodies = [review[4] for review in reviews], [review[5] for review in reviews]
    for quirk in (",", '"', "\n"):
        share = sum(quirk in body for body in bodies) / len(bodies)
        assert 0.01 <= share <= 0.25, quirk
    assert any('"' in summary for summary in summaries)
    assert any(not body.isascii() for body in bodies)
    assert '""' in (clean / "reviews.csv").read_text(encoding="utf-8")
    assert max(map(len, summaries)) <= 60
    assert all(50 <= len(body) <= 1000 for body in bodies)
    assert max(map(len, bodies)) >= 600
    assert any(review[10] == "" for review in reviews)  # "" means no response too
    assert all(re.fullmatch(r"[\w.]+@\w+\.com", review[9]) for review in reviews)
    assert sum(review[9] == "first.last@gmail.com" for review in reviews) > 0


def test_bom_crlf_and_mixed_booleans_change_only_the_format(tmp_path: Path, clean: Path) -> None:
    folder = export(tmp_path, products=2_000, bom=True, crlf=True, mixed_booleans=True)
    for name in FILES:
        raw = (folder / name).read_bytes()
        records = read(folder, name)
        assert raw.startswith(b"\xef\xbb\xbf" + HEADERS[name].encode() + b"\r\n")
        assert raw.count(b"\r\n") == len(records)  # line breaks inside bodies stay LF
        if name != "reviews.csv":
            assert records == read(clean, name)

    def normalised(rows: list[list[str]]) -> list[list[str]]:
        return [
            [*row[:6], str(BOOLEANS[row[6].lower()]), str(BOOLEANS[row[7].lower()]), *row[8:]] for row in rows
        ]

    mixed, plain = read(folder, "reviews.csv")[1:], read(clean, "reviews.csv")[1:]
    assert normalised(mixed) == normalised(plain)
    assert {review[6] for review in mixed} == {"true", "TRUE", "True", "1", "false", "FALSE", "False", "0"}


def classify(folder: Path) -> dict[str, Counter[str]]:
    """Each file's rows by kind ("clean" or a dirty kind), judged from the files alone."""
    kinds: dict[str, Counter[str]] = {}
    seen: dict[str, dict[int, list[str]]] = {}
    for name in FILES:
        kinds[name], seen[name] = Counter(), {}
        last_clean = 0
        for row in read(folder, name)[1:]:
            kind = _kind(name, row, seen)
            kinds[name][kind] += 1
            if kind == "clean":
                seen[name][int(row[0])] = row
                assert int(row[0]) > last_clean, "clean ids rise (a duplicate comes after its original)"
                last_clean = int(row[0])
    return kinds


def _kind(name: str, row: list[str], seen: dict[str, dict[int, list[str]]]) -> str:
    if len(row) != len(HEADERS[name].split(",")):
        return "wrong_column_count"
    if not row[0].isdigit():
        return "non_numeric_id"
    if int(row[0]) in seen[name]:
        assert seen[name][int(row[0])] != row, "a duplicate id has content of its own"
        return "duplicate_id"
    reviews, characteristics = seen.get("reviews.csv", {}), seen.get("characteristics.csv", {})
    if name == "reviews.csv":
        if not 1 <= int(row[2]) <= 5:
            return "rating_out_of_range"
        if not row[3].isdigit():
            return "bad_date"
        if row[6].lower() not in BOOLEANS:
            return "bad_boolean"
        assert DATE_MIN <= int(row[3]) < DATE_MAX and row[7].lower() in BOOLEANS
    elif name == "reviews_photos.csv":
        if int(row[1]) not in reviews:
            return "missing_review"
    elif name == "characteristic_reviews.csv":
        if int(row[2]) not in reviews:
            return "missing_review"
        if int(row[1]) not in characteristics:
            return "missing_characteristic"
        if not 1 <= int(row[3]) <= 5:
            return "value_out_of_range"
        if characteristics[int(row[1])][1] != reviews[int(row[2])][1]:
            return "characteristic_of_other_product"
    return "clean"


def clean_rows_in_order(rows: list[list[str]], within: list[list[str]]) -> Iterator[bool]:
    remaining = iter(within)
    yield from (any(row == candidate for candidate in remaining) for row in rows)


@pytest.mark.parametrize("seed", [1, 4])
def test_a_dirty_row_of_the_wrong_width_is_one_line(tmp_path: Path, seed: int) -> None:
    """The loader reports a record of several lines and the wrong width by its first line and reads the
    next one again, so a line break inside one would report it under other kinds than the manifest's."""
    folder = export(tmp_path, products=300, dirty_rate=1.0, seed=seed)
    for name in FILES:
        width = HEADERS[name].count(",") + 1
        wrong = [row for row in read(folder, name) if len(row) != width]
        assert wrong, name
        assert not [row for row in wrong if any("\n" in field or "\r" in field for field in row)], name


@pytest.mark.parametrize(
    ("products", "rate", "seed"),
    [(2_000, 0.03, 42), (2, 0.01, 42), (300, 1.0, 42), (3, 1.0, 10), (2_001, 0.01, 8)],
    # seed 10: a gap before product 2 of 3; seed 8: a last chunk of one product, with no photo.
)
def test_dirty_rows_are_counted_exactly(tmp_path: Path, products: int, rate: float, seed: int) -> None:
    folder = export(tmp_path / "dirty", products=products, dirty_rate=rate, seed=seed)
    manifest = json.loads((folder / "manifest.json").read_text())
    kinds = classify(folder)
    without_dirt = export(tmp_path / "clean", products=products, seed=seed)

    for name in FILES:
        entry, found = manifest["files"][name], kinds[name]
        dirty = {kind: count for kind, count in found.items() if kind != "clean"}
        assert entry["dirty"] == dirty
        assert set(dirty) == set(KINDS[name])  # every kind, even for a two-product export
        assert entry["clean"] == found["clean"] == len(read(without_dirt, name)) - 1
        assert entry["rows"] == entry["clean"] + sum(dirty.values())
        if products > 2:
            assert abs(sum(dirty.values()) - rate * entry["clean"]) <= len(KINDS[name])
        # Dirt only adds rows: the clean rows are the same, in the same order.
        assert all(clean_rows_in_order(read(without_dirt, name), read(folder, name)))


def test_manifest_without_dirt(clean: Path) -> None:
    manifest = json.loads((clean / "manifest.json").read_text())
    assert (manifest["seed"], manifest["products"], manifest["dirty_rate"]) == (42, 2_000, 0)
    for name in FILES:
        rows = len(read(clean, name)) - 1
        assert manifest["files"][name] == {"rows": rows, "clean": rows, "dirty": {}}


@pytest.mark.parametrize(
    "arguments",
    [
        ["--products", "0"],
        ["--products", "-3"],
        ["--products", "many"],
        ["--dirty-rate", "1.5"],
        ["--dirty-rate", "-0.1"],
        ["--dirty-rate", "nan"],
        ["--products", "1", "--dirty-rate", "0.1"],
    ],
)
def test_cli_refuses_bad_arguments(
    tmp_path: Path, arguments: list[str], capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path), *arguments])
    assert exit_.value.code == 2
    assert "atelier-generate: error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"products": 0}, "products must be between 1 and"),
        ({"dirty_rate": 2.0}, "dirty_rate must be between 0 and 1"),
        ({"dirty_rate": float("nan")}, "dirty_rate must be between 0 and 1"),
        ({"products": 1, "dirty_rate": 0.5}, "dirty rows need at least 2 products"),
    ],
)
def test_options_refuse_what_cannot_be_generated(tmp_path: Path, options: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Options(out=tmp_path, **{"products": 10, **options})


def test_cli_refuses_an_out_folder_it_cannot_create(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "file" / "export")])
    assert exit_.value.code == 2
    assert "cannot create" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    out = tmp_path / "new" / "export"
    command = [sys.executable, "-m", "atelier_etl.generate", "--out", str(out), "--products", "50"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    assert sorted(path.name for path in out.iterdir()) == sorted([*FILES, "manifest.json"])
    for name in FILES:
        assert name in result.stdout
    assert "\x1b[" not in result.stdout  # no progress bar when stdout is not a terminal


def _fail_after_first_chunk(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """The second chunk's rows fail to come (a full disk, Ctrl-C): the first chunk is already written."""
    real = generate_module.clean_chunk
    calls = []

    def clean_chunk(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise error
        return real(*args)

    monkeypatch.setattr(generate_module, "clean_chunk", clean_chunk)


@pytest.mark.parametrize(
    ("error", "code", "says"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), 1, "No space left on device; nothing replaced"),
        (KeyboardInterrupt(), 130, "interrupted; nothing replaced"),
    ],
)
def test_a_run_that_fails_leaves_the_previous_export_whole(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    error: BaseException,
    code: int,
    says: str,
) -> None:
    """Files were written in place and the manifest last: a failed run left truncated files beside the
    earlier run's manifest, which `make up` and `make load` took for a complete export."""
    out = export(tmp_path / "export", products=3_000)
    before = digests(out)
    _fail_after_first_chunk(monkeypatch, error)

    assert main(["--out", str(out), "--products", "3000", "--seed", "9", "--no-progress"]) == code

    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"atelier-generate: {'error: ' if code == 1 else ''}{says}"]
    assert digests(out) == before  # no partial file left either


def test_the_cli_refuses_to_replace_an_export_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "reviews.csv").write_text("a real export\n")
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path), "--products", "20"])
    assert exit_.value.code == 2
    assert "holds reviews.csv but no manifest.json" in capsys.readouterr().err
    assert (tmp_path / "reviews.csv").read_text() == "a real export\n"

    assert main(["--out", str(tmp_path), "--products", "20", "--force", "--no-progress"]) == 0
    assert (tmp_path / "manifest.json").exists()
    assert main(["--out", str(tmp_path), "--products", "20", "--no-progress"]) == 0  # its own: replaced


def test_the_stack_names_export_files_it_did_not_finish_and_leaves_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`make up`/`make load` (stack.generate) regenerate a folder without manifest.json. Files there
    without one are a run cut short (a generator before this one wrote in place) or a user's own export:
    the generator refuses both now, and the stack says which it may be and what to do."""
    sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
    import stack

    (tmp_path / "reviews.csv").write_text("an export\n")
    with pytest.raises(SystemExit, match="holds export files but no manifest.json.*atelier-load --data"):
        stack.generate(tmp_path, 20, {"PATH": os.environ["PATH"]})
    assert (tmp_path / "reviews.csv").read_text() == "an export\n"


def test_the_stack_generates_again_an_export_of_an_older_generator(tmp_path: Path) -> None:
    """The same arguments give other bytes since the ids have gaps: `make up`, `make load` and the
    benchmarks reused any folder whose manifest named the product count, so an export written before
    kept dense ids. manifest.json now says which generator wrote it."""
    sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
    import stack

    manifest_path = export(tmp_path, products=20) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["generator_version"] == generate_module.GENERATOR_VERSION
    assert stack.generated(tmp_path, 20) and not stack.generated(tmp_path, 21)
    del manifest["generator_version"]  # as the generator before it wrote it
    manifest_path.write_text(json.dumps(manifest))
    assert not stack.generated(tmp_path, 20)

    stack.generate(tmp_path, 20, {"PATH": os.environ["PATH"]})
    assert stack.generated(tmp_path, 20)
