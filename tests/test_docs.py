"""The manual and the front door: `mkdocs build --strict` passes (so a broken link or anchor in docs/ fails the
suite) and builds every page of the nav; the README stays short, starts with the two commands, and links only
to files that exist."""
import re
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TWO_COMMANDS = (
    'python3.11 -m venv .venv && .venv/bin/pip install -e ".[test,spark]" && .venv/bin/huaxiang demo\n'
    ".venv/bin/python -m pytest\n"
)


def nav_pages() -> list[str]:
    """The Markdown files named in mkdocs.yml's nav (read as text: the file needs no YAML library)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:", 1)[1]
    pages = []
    for line in nav.splitlines()[1:]:
        if line and not line.startswith(" "):
            break
        pages += re.findall(r"([\w./-]+\.md)\s*$", line)
    return pages


def test_the_nav_lists_every_page_of_docs():
    pages = nav_pages()
    assert pages[0] == "index.md"
    assert sorted(pages) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))


def test_mkdocs_builds_the_manual_strictly(tmp_path):
    site = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    for page in nav_pages():
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), f"{page} was not built"
    assert (site / "scale.png").is_file()


def test_readme_is_a_short_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; the manual belongs in docs/"


def test_readme_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    first = re.search(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M)
    assert first is not None
    assert first.group(1) == TWO_COMMANDS


def test_readme_links_point_to_existing_files():
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    missing = []
    for link in links:
        if re.match(r"[a-z][a-z0-9+.-]*:", link) or link.startswith("#"):
            continue  # a web address or an anchor in the README itself
        path = link.split("#", 1)[0]
        if not (ROOT / path).exists():
            missing.append(link)
    assert missing == []
