"""The repository stands alone: the tests read only data that ships with it (the package's bundled slices and
tests/data/), never a team folder beside the clone, and every file in tests/data/ has its source note."""
from pathlib import Path

TESTS = Path(__file__).resolve().parent
# ways of reaching a data folder outside the clone: "../shared", ".../shared/data", or two levels up from tests/
OUTSIDE = ("../shared", "shared/data", "parents[2]")


def test_no_test_reads_data_beside_the_clone():
    found = []
    for path in sorted(TESTS.rglob("*")):
        if not path.is_file() or path == Path(__file__).resolve() or path.suffix in {".gz", ".pyc"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{path.relative_to(TESTS)}:{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
                  if any(pattern in line for pattern in OUTSIDE)]
    assert not found, "tests must use data that ships with the repository:\n" + "\n".join(found)


def test_every_test_data_file_has_its_source():
    note = (TESTS / "data" / "SOURCE.md").read_text(encoding="utf-8")
    files = [p.name for p in (TESTS / "data").iterdir() if p.is_file() and p.name != "SOURCE.md"]
    assert files and all(f"`{name}`" in note for name in files)
