"""The API's pages (console, Swagger UI, ReDoc) load nothing from another host; extras are named."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from online.api import ApiSettings, create_app

ROOT = Path(__file__).resolve().parents[1]


class _Links(HTMLParser):
    """Every URL an HTML page loads or links to (src, href) and its inline script text."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self._in_script = tag == "script"
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(ApiSettings(data_dir=tmp_path / "data"))) as c:
        yield c


def _same_host(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc  # relative: this server


@pytest.mark.parametrize("path", ["/console", "/docs", "/redoc"])
def test_pages_reference_no_other_host(client, path) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = _Links()
    page.feed(r.text)
    assert page.urls, "the page loads its assets"
    outside = [u for u in page.urls if not _same_host(u)]
    assert not outside, outside
    # inline configuration (Swagger UI's) names no host either
    assert not re.search(r"https?://", "".join(page.scripts))
    for url in page.urls:
        if not url.startswith("#"):
            assert client.get("/" + url.lstrip("/")).status_code == 200, url
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_the_console_script_calls_only_relative_api_paths(client) -> None:
    js = client.get("/console/assets/console.js").text
    assert not re.search(r"https?://", js)
    assert 'api("v1/features")' in js and "X-API-Key" in js


def test_redoc_bundle_is_served_without_its_cdn_logo(client) -> None:
    js = client.get("/docs-assets/redoc.standalone.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    assert b"cdn.redoc.ly" not in js.content


def test_the_pages_are_outside_the_schema_and_need_no_key(tmp_path) -> None:
    settings = ApiSettings(data_dir=tmp_path / "data", api_read_keys=["k"])
    with TestClient(create_app(settings)) as c:
        for path in ("/console", "/console/assets/console.css", "/docs", "/redoc"):
            assert c.get(path).status_code == 200, path
        assert c.get("/v1/features").status_code == 401
        paths = c.get("/openapi.json").json()["paths"]
        assert not {p for p in paths if p.startswith(("/console", "/docs", "/redoc"))}


def test_a_missing_extra_is_one_line_naming_it(tmp_path) -> None:
    # hide OpenDP from a real `portrait segments` run: sys.modules[name] = None makes the
    # import fail exactly as an uninstalled package does
    code = ("import sys; sys.modules['opendp'] = None\n"
            "from offline.cli import main; main()")  # fmt: skip
    gen = subprocess.run(
        [sys.executable, "-c", "from offline.cli import main; main()", "--data-dir",
         str(tmp_path), "generate", "--users", "20", "--events", "300", "--seed", "1",
         "--out", str(tmp_path / "ev.jsonl")],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code, "--data-dir", str(tmp_path), *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run("ingest", str(tmp_path / "ev.jsonl"), "--json").returncode == 0
    proc = run("segments", "--epsilon", "1")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: differentially private aggregates need opendp, which is not installed: "
        "pip install 'portrait[dp]'"
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_wheel_carries_the_console(tmp_path) -> None:
    # build from a copy: setuptools leaves build/ and *.egg-info in the tree it builds
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "data", "build", "*.egg-info", "__pycache__", "bench"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("portrait-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("index.html", "console.js", "console.css"):
        assert f"online/api/console/{name}" in names
