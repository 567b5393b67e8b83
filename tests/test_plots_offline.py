"""`dvc plots show` / `diff` readable offline (issue 20, item 6): pipeline/plots_offline.py.

The unit tests build fake npm tarballs; the end-to-end test packs the real Vega libraries with npm,
runs the real `dvc plots show` and `diff` on the repository's reports/plots/, and loads the page in
headless Chromium with every network request refused (a proxy on a closed port): DVC's own page
draws nothing there, this one draws every plot.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pipeline import plots_offline as po

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def fake_library(folder: Path, name: str, js: str) -> po.Library:
    path = folder / f"{name}-1.0.0.tgz"
    with tarfile.open(path, "w:gz") as tar:
        data = js.encode()
        info = tarfile.TarInfo(f"package/build/{name}.min.js")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return po.Library(f"{name}@1.0.0", path.name, f"package/build/{name}.min.js", po.sri_sha512(path))


def _renderer():
    from dvc_render import VegaRenderer

    return VegaRenderer([{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}], "loss.csv", x="step", y="loss")


def test_the_template_carries_the_libraries_inline_and_keeps_dvcs_placeholders(tmp_path):
    libs = [fake_library(tmp_path, "a", "window.a = 1;"), fake_library(tmp_path, "b", "window.b = 2;")]
    out = po.template(tmp_path / "cache", tarballs=tmp_path, libraries=libs, log=lambda m: None)
    page = out.read_text()
    assert "<script>window.a = 1;</script>" in page and "<script>window.b = 2;</script>" in page
    assert page.index("window.a") < page.index("window.b")  # the order vega-embed needs
    assert "{plot_divs}" in page and "{refresh_tag}" in page
    assert "{scripts}" not in page  # where DVC would put its CDN tags


def test_dvcs_own_page_loads_from_a_cdn_and_the_offline_one_loads_nothing(tmp_path):
    # the check itself must see DVC's CDN tags (else "loads nothing" would be vacuous)
    from dvc_render import render_html

    render_html([_renderer()], tmp_path / "default.html")
    assert any("cdn.jsdelivr.net/npm/vega@" in r for r in po.remote_references((tmp_path / "default.html").read_text()))
    libs = [fake_library(tmp_path, "a", "var x = 'https://vega.github.io/editor/'; a.href = x;")]
    template = po.template(tmp_path / "cache", tarballs=tmp_path, libraries=libs, log=lambda m: None)
    render_html([_renderer()], tmp_path / "offline.html", html_template=template)
    page = (tmp_path / "offline.html").read_text()
    assert "vegaEmbed('#" in page and po.remote_references(page) == []


def test_a_tarball_that_is_not_the_pinned_one_is_refused_and_no_template_is_written(tmp_path):
    lib = fake_library(tmp_path, "a", "window.a = 1;")._replace(integrity="sha512-" + "A" * 86 + "==")
    with pytest.raises(po.PlotsError, match=r"a-1.0.0.tgz: sha512 .* is not a@1.0.0's pinned"):
        po.template(tmp_path / "cache", tarballs=tmp_path, libraries=[lib], log=lambda m: None)
    assert not (tmp_path / "cache" / po.TEMPLATE).exists()


@pytest.mark.parametrize("js", ["document.write('</SCRIPT>')", "var t = '{plot_divs}';"])
def test_a_library_that_cannot_be_inlined_is_refused(tmp_path, js):
    lib = fake_library(tmp_path, "a", js)
    with pytest.raises(po.PlotsError, match="cannot be inlined"):
        po.template(tmp_path / "cache", tarballs=tmp_path, libraries=[lib], log=lambda m: None)


def test_revisions_without_diff_are_a_usage_error(capsys):
    assert po.main(["show", "HEAD"]) == 2
    assert "revisions are for `diff`" in capsys.readouterr().err


def _drawn(page: Path) -> int:
    """Vega's drawn marks in `page`, loaded by headless Chromium with every network request refused."""
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--proxy-server=127.0.0.1:9",
            "--proxy-bypass-list=<-loopback>",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    return len(re.findall(r'class="marks"', dom))


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("npm") is None or CHROMIUM is None,
    reason="needs npm (the Vega packages) and headless Chromium (Debian: apt-get install chromium npm)",
)
def test_dvc_plots_show_and_diff_draw_with_the_network_refused(tmp_path):
    dvc = str(Path(sys.executable).parent / "dvc")
    plain = tmp_path / "plain"
    subprocess.run([dvc, "plots", "show", "-o", str(plain)], cwd=ROOT, check=True, capture_output=True)
    assert _drawn(plain / "index.html") == 0  # DVC's page, its CDN unreachable: blank
    for argv, out in ((["show"], tmp_path / "show"), (["diff", "HEAD"], tmp_path / "diff")):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.plots_offline",
                *argv,
                "--out",
                str(out),
                "--cache",
                str(tmp_path / "cache"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        page = (out / "index.html").read_text()
        assert po.remote_references(page) == []
        plots = page.count("vegaEmbed('#")
        assert plots > 0 and _drawn(out / "index.html") == plots, argv
