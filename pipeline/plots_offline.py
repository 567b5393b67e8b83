"""`dvc plots show` / `dvc plots diff` readable offline (issue 20, item 6).

    python -m pipeline.plots_offline                     # = dvc plots show  -> dvc_plots/index.html
    python -m pipeline.plots_offline diff HEAD~1 HEAD    # = dvc plots diff HEAD~1 HEAD
    make plots  /  make plots REVS="HEAD~1 HEAD"

DVC's page loads Vega, Vega-Lite and vega-embed from a CDN (dvc_render.vega.VegaRenderer.SCRIPTS):
offline, or behind a proxy that blocks it, every plot is blank. This runs the same `dvc plots`
command with `--html-template` set to a page that carries the three libraries inline, so the
page it writes is one self-contained file that draws with no network at all.

The libraries are the versions DVC's own page names (VEGA below), fetched once with the npm client
(`npm pack`, which checks the registry's integrity) and checked again against the pinned sha512
before a byte is read; the template is kept in dvc_plots/.vega/ (git-ignored with dvc_plots/), so
later runs need neither npm nor the network. `dvc plots show --html-template
dvc_plots/.vega/offline.html` uses it directly once made.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import NamedTuple

from pipeline.spec import environment


class PlotsError(RuntimeError):
    """One line for the user: what failed (exit 1), or what is missing (NpmMissing: exit 2)."""


class NpmMissing(PlotsError):
    pass


class Library(NamedTuple):
    package: str  # what `npm pack` is given
    tarball: str  # the file it writes
    member: str  # the browser build inside it
    integrity: str  # `npm view <package> dist.integrity` (npm versions are immutable)


# the versions dvc-render 1.0.2's page loads from the CDN, in its order (vega-embed needs the other two)
VEGA = (
    Library(
        "vega@5.20.2",
        "vega-5.20.2.tgz",
        "package/build/vega.min.js",
        "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
    ),
    Library(
        "vega-lite@5.2.0",
        "vega-lite-5.2.0.tgz",
        "package/build/vega-lite.min.js",
        "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
    ),
    Library(
        "vega-embed@6.18.2",
        "vega-embed-6.18.2.tgz",
        "package/build/vega-embed.min.js",
        "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
    ),
)
CACHE = Path("dvc_plots") / ".vega"  # beside DVC's default output, git-ignored with it
TEMPLATE = "offline.html"
MAX_SCRIPT_BYTES = 8 << 20  # vega.min.js is 0.5 MB: a member past this is not the library
NPM_TIMEOUT_S = 300
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")  # dvc_render.html.HTML fills these in

# dvc_render.html.PAGE_HTML with {scripts} (the CDN tags) replaced by the libraries themselves
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
%s
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>"""

# what a page loads by itself: src/href attributes and CSS url(...) in its markup. Inline script
# bodies are left out: the libraries' code and the plots' specs (whose $schema strings are names,
# never fetched; vega-embed's "open in editor" link is followed only when clicked)
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc\s*=)[^>]*>.*?</script\s*>", re.I | re.S)
LOADED = re.compile(
    r"""(?:\bsrc|\bhref)\s*=\s*["']?\s*(?:https?:)?//[^"'\s>]*|url\(\s*["']?(?:https?:)?//[^)]*\)""", re.I
)


def remote_references(html: str) -> list[str]:
    """The addresses a page would fetch from the network (empty for a page that draws offline)."""
    return [m.group(0) for m in LOADED.finditer(INLINE_SCRIPT.sub("", html))]


def sri_sha512(path: Path) -> str:
    from pipeline.data.fetch_npm import sri_sha512 as sri

    return sri(path)


def npm_pack(lib: Library, dest: Path) -> Path:
    """`npm pack <package>` in `dest`; the tarball, its sha512 checked against the pinned one."""
    npm = shutil.which("npm")
    if npm is None:
        raise NpmMissing(f"npm not found: install Node.js/npm to fetch {lib.package} once (then no network is needed)")
    try:  # --ignore-scripts: packing runs nothing of the package; this says so
        proc = subprocess.run(
            [npm, "pack", lib.package, "--ignore-scripts", "--silent"],
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise PlotsError(
            f"npm pack {lib.package}: no answer in {NPM_TIMEOUT_S} s (is the npm registry reachable?)"
        ) from None
    tarball = dest / lib.tarball
    if proc.returncode or not tarball.is_file():
        said = " ".join((proc.stderr or proc.stdout or "").split())[-300:]
        raise PlotsError(f"npm pack {lib.package} failed (exit {proc.returncode}{'; ' + said if said else ''})")
    return tarball


def script(lib: Library, tarball: Path) -> str:
    """The library's browser build from its tarball, after the tarball's sha512 matched the pin."""
    got = sri_sha512(tarball)
    if got != lib.integrity:
        raise PlotsError(f"{tarball.name}: sha512 {got[:30]}... is not {lib.package}'s pinned {lib.integrity[:30]}...")
    with tarfile.open(tarball, "r:gz") as tar:
        try:
            member = tar.getmember(lib.member)
        except KeyError:
            raise PlotsError(f"{tarball.name}: no {lib.member}") from None
        if not member.isfile() or member.size > MAX_SCRIPT_BYTES:
            raise PlotsError(f"{tarball.name}: {lib.member} is not a file of at most {MAX_SCRIPT_BYTES} bytes")
        text = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]  # isfile()
    # inline, the text must neither close the <script> element nor hold a placeholder DVC would fill
    for bad in ("</script", *PLACEHOLDERS):
        if bad in (text.lower() if bad == "</script" else text):
            raise PlotsError(f"{lib.package}: {lib.member} contains {bad!r} and cannot be inlined")
    return text


def page(scripts: list[str]) -> str:
    tags = "\n".join(f"    <script>{s}</script>" for s in scripts)
    return PAGE.replace("%s", tags, 1)


def template(cache: Path = CACHE, tarballs: Path | None = None, libraries=VEGA, log=print) -> Path:
    """The offline template in `cache` (made once: from the tarballs in `tarballs` when given, else
    by npm pack). Written beside its place and renamed: it is whole or absent."""
    out = cache / TEMPLATE
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        scripts = []
        for lib in libraries:
            tarball = tarballs / lib.tarball if tarballs else None
            if tarball is None or not tarball.is_file():
                log(f"npm pack {lib.package}")
                tarball = npm_pack(lib, Path(tmp))
            scripts.append(script(lib, tarball))
        part = Path(tmp) / TEMPLATE
        part.write_text(page(scripts), encoding="utf-8")
        os.replace(part, out)
    return out


def dvc_command(args: argparse.Namespace, html_template: Path) -> list[str]:
    beside = Path(sys.executable).parent / "dvc"
    dvc = str(beside) if beside.is_file() else (shutil.which("dvc") or "dvc")
    cmd = [dvc, "plots", args.command, *args.revisions, "--html-template", str(html_template.resolve()), "-o", args.out]
    return cmd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog=environment.command_name("pipeline.plots_offline"), description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "command",
        nargs="?",
        default="show",
        choices=["show", "diff"],
        help="show: dvc plots show (the workspace); diff: dvc plots diff REVISIONS (default show)",
    )
    ap.add_argument(
        "revisions", nargs="*", help="diff only: the git revisions to compare (as dvc plots diff takes them)"
    )
    ap.add_argument("--out", default="dvc_plots", help="folder of the page, index.html (default dvc_plots)")
    ap.add_argument("--tarballs", type=Path, help="a folder holding the three npm tarballs (no npm, no network)")
    ap.add_argument("--cache", type=Path, default=CACHE, help=f"where the offline template is kept (default {CACHE})")
    args = ap.parse_args(argv)
    if args.revisions and args.command != "diff":
        print(f"normlab: plots: revisions are for `diff` (got show {' '.join(args.revisions)})", file=sys.stderr)
        return 2
    environment.apply()
    try:
        html_template = template(args.cache, tarballs=args.tarballs)
    except NpmMissing as err:
        print(f"normlab: plots: {err}", file=sys.stderr)
        return 2
    except PlotsError as err:
        print(f"normlab: plots: {err}", file=sys.stderr)
        return 1
    proc = subprocess.run(dvc_command(args, html_template))
    if proc.returncode:
        return proc.returncode
    index = Path(args.out) / "index.html"
    if not index.is_file():  # DVC said why ("No plots were loaded")
        return 1
    remote = remote_references(index.read_text(encoding="utf-8"))
    if remote:
        print(f"normlab: plots: {index} still loads {remote[0]}", file=sys.stderr)
        return 1
    print(f"{index}: draws offline (Vega inline)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
