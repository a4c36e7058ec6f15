"""Look at the built site in a real browser: ``make docs-check``.

Serves ``docs/_build/html`` on 127.0.0.1, opens the gallery index, every
tutorial page, every page of the Results section, the Performance page, the
home page, the guide and every API page in headless Chromium, and fails when
a page

* logs a console error, throws an uncaught exception or fails to load a resource,
* references a script, style sheet or image outside the site (an offline
  reader could not load it),
* shows an image that did not load (``naturalWidth == 0``),
* has an embedded animation whose player lacks its frames (fewer than two
  frames, a frame that does not decode, or stepping does not change the picture),
* still shows raw TeX because MathJax did not typeset it.

Before the browser starts, every HTML file of the build is read for links:
a link or image to a file of the site that does not exist, or to an anchor
that the target page does not have, fails (links to other sites are not
followed: the check runs offline).

It also writes one animation with :func:`dgl_capsules.viz.save_animation` to a
stand-alone ``.html`` file, opens it the same way and fails if it requests
anything outside its own server or a player button shows no symbol (the
player's icon font used to come from a CDN).

A full-page screenshot of every page goes to ``docs/_build/screenshots/``.

Chromium is Debian's ``chromium`` package, installed with apt-get when it is
missing (as root). It is driven over the Chrome DevTools Protocol with the
``websocket-client`` package (the ``docs`` extra); no browser or driver is
downloaded.

Usage: ``python tools/check_site.py [--html DIR] [--tutorials DIR] [--out DIR]``
"""
import argparse
import base64
import functools
import html.parser
import http.server
import itertools
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--window-size=1280,900",
]
PAGE_TIMEOUT = 60.0  # seconds for a page to load and settle
MAX_SHOT_HEIGHT = 16000  # px; longer pages are cut in the screenshot


# ---------------------------------------------------------------- browser


def find_or_install_chromium():
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    if os.geteuid() != 0:
        sys.exit("check_site: chromium is not installed; run `apt-get install chromium` as root")
    print("check_site: installing Debian's chromium (apt-get) ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    path = shutil.which("chromium")
    if not path:
        sys.exit("check_site: apt-get installed chromium but no `chromium` is on PATH")
    return path


class Browser:
    """One headless Chromium with a fresh profile, driven over the DevTools websocket."""

    def __init__(self, binary):
        import websocket  # websocket-client, from the docs extra

        self._profile = tempfile.mkdtemp(prefix="dgl-capsules-chromium-")
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"chromium exited with {self.proc.returncode}:\n{err}")
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port within 60 s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        # Drain stderr so a chatty browser never blocks on a full pipe.
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.load(resp)
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=PAGE_TIMEOUT, suppress_origin=True,
            enable_multithread=True,
        )
        self._ids = itertools.count(1)
        self.events = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method, **params):
        """Send one command and return its result, collecting the events that arrive meanwhile."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def pump(self, seconds):
        """Collect events for ``seconds``."""
        deadline = time.monotonic() + seconds
        self.ws.settimeout(0.1)
        try:
            while time.monotonic() < deadline:
                try:
                    msg = json.loads(self.ws.recv())
                except Exception:  # websocket timeout: nothing arrived
                    continue
                if "method" in msg:
                    self.events.append(msg)
        finally:
            self.ws.settimeout(PAGE_TIMEOUT)

    def evaluate(self, expression, await_promise=False):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=await_promise)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails'].get('text')}: "
                               f"{res['exceptionDetails'].get('exception', {}).get('description')}")
        return res["result"].get("value")

    def goto(self, url):
        self.events = []
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + PAGE_TIMEOUT
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not finish loading within {PAGE_TIMEOUT:.0f} s")
            self.pump(0.2)

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self._profile, ignore_errors=True)


# ---------------------------------------------------------------- page checks

SETTLE_JS = """
(async () => {
  // load every image now (lazy ones too) and wait until all have decoded or failed
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null :
      new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  await new Promise(r => setTimeout(r, 300));  // let setTimeout(0) players start
  return true;
})()
"""

IMAGES_JS = """
Array.from(document.images).map(i => ({
  src: (i.currentSrc || i.src || '').slice(0, 120), complete: i.complete,
  w: i.naturalWidth, inAnimation: !!i.closest('.animation')}))
"""

# Each matplotlib jshtml player: <div class="animation"><img id="_anim_img<id>"> + a
# slider; its script creates a global `anim<id>` with `.frames` (Image objects).
ANIMATIONS_JS = """
(async () => {
  const out = [];
  for (const div of document.querySelectorAll('div.animation')) {
    const img = div.querySelector('img[id^="_anim_img"]');
    const res = {id: img ? img.id : null, frames: 0, decoded: 0, bad: [], changes: false, slider: null};
    if (!img) { out.push(res); continue; }
    const uid = img.id.slice('_anim_img'.length);
    const anim = window['anim' + uid];
    const slider = document.getElementById('_anim_slider' + uid);
    res.slider = slider ? parseInt(slider.max) : null;
    if (!anim) { out.push(res); continue; }
    res.frames = anim.frames.length;
    for (let k = 0; k < anim.frames.length; k++) {
      const f = anim.frames[k];
      try { await f.decode(); } catch (e) {}
      if (f.naturalWidth > 0) res.decoded += 1; else res.bad.push(k);
    }
    anim.pause_animation();
    anim.first_frame();
    const first = img.src;
    anim.last_frame();
    res.changes = img.src !== first && img.src.startsWith('data:image');
    anim.first_frame();
    out.push(res);
  }
  return out;
})()
"""

EXTERNAL_JS = """
Array.from(document.querySelectorAll('script[src], link[rel~="stylesheet"][href], img[src]'))
  .map(e => e.getAttribute('src') || e.getAttribute('href'))
  .filter(u => /^(https?:)?\\/\\//.test(u))
"""

RAW_TEX_JS = """
(() => {
  const math = Array.from(document.querySelectorAll('.math'));
  const raw = math.filter(m => !m.querySelector('mjx-container'));
  return {math: math.length, raw: raw.slice(0, 3).map(m => m.textContent.slice(0, 80))};
})()
"""


def page_errors(events, base):
    """Console errors, uncaught exceptions and failed loads among the DevTools events."""
    errors = []
    for ev in events:
        m, p = ev["method"], ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            errors.append(f"console.{p['type']}: {text[:300]}")
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append(f"uncaught exception: {d.get('exception', {}).get('description', d.get('text'))}"[:400])
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            errors.append(f"console ({e.get('source')}): {e.get('text')} {e.get('url', '')}"[:400])
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            errors.append(f"failed to load ({p.get('type')}): {p.get('errorText')}")
        elif m == "Network.responseReceived":
            r = p.get("response", {})
            if r.get("status", 200) >= 400:
                errors.append(f"HTTP {r['status']} for {r.get('url', '').replace(base, '')}")
    return errors


def check_page(browser, base, rel, shots, expect_animation=False):
    """Open one page; return (problems, summary)."""
    url = f"{base}/{rel}"
    browser.goto(url)
    browser.evaluate(SETTLE_JS, await_promise=True)
    browser.pump(0.5)
    problems = list(page_errors(browser.events, base))

    for u in browser.evaluate(EXTERNAL_JS):
        problems.append(f"references an external resource (unreachable offline): {u}")

    images = browser.evaluate(IMAGES_JS)
    for im in images:
        if im["w"] == 0:
            problems.append(f"image did not load (naturalWidth 0): {im['src']}")

    anims = browser.evaluate(ANIMATIONS_JS, await_promise=True)
    for a in anims:
        if a["frames"] < 2:
            problems.append(f"animation {a['id']}: player has {a['frames']} frames")
        elif a["bad"]:
            problems.append(f"animation {a['id']}: frames {a['bad'][:5]} do not decode")
        elif a["slider"] != a["frames"] - 1:
            problems.append(f"animation {a['id']}: slider max {a['slider']} for {a['frames']} frames")
        elif not a["changes"]:
            problems.append(f"animation {a['id']}: stepping to the last frame does not change the image")
    if expect_animation and not anims:
        problems.append("expected an embedded animation, found none")

    tex = browser.evaluate(RAW_TEX_JS)
    if tex["raw"]:
        problems.append(f"{len(tex['raw'])}+ of {tex['math']} formulas not typeset by MathJax: {tex['raw']}")

    # full-page screenshot (capped), taken with the page scrolled to the top
    height = int(browser.evaluate("document.documentElement.scrollHeight") or 900)
    height = min(max(height, 900), MAX_SHOT_HEIGHT)
    browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=height,
                 deviceScaleFactor=1, mobile=False)
    browser.evaluate("window.scrollTo(0, 0)")
    browser.pump(0.3)
    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
    browser.call("Emulation.clearDeviceMetricsOverride")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", rel.removesuffix(".html")) + ".png"
    (shots / name).write_bytes(base64.b64decode(shot["data"]))

    summary = (f"{len(images)} images, {len(anims)} animations "
               f"({', '.join(str(a['frames']) + ' frames' for a in anims) or '-'}), "
               f"{tex['math']} formulas")
    return problems, summary, shots / name


# ---------------------------------------------------------------- stand-alone player

BUTTONS_JS = """
Array.from(document.querySelectorAll('.anim-buttons button')).map(b => ({
  title: b.title, text: b.innerText.trim(), width: b.getBoundingClientRect().width}))
"""


def check_standalone_player(browser, shots):
    """Write an animation with save_animation(..., ".html") and check it works offline; return problems."""
    import matplotlib

    matplotlib.use("Agg")
    import dgl_capsules as dc
    from dgl_capsules import viz

    root = Path(tempfile.mkdtemp(prefix="dgl-capsules-player-"))
    try:
        p = dc.data.planted_clusters(n_in=12, n_out=3)
        r = dc.routing.dynamic_routing(p.graph, p.votes, n_iters=3, return_trace=True)
        viz.save_animation(viz.animate_bipartite(p.graph, r.trace), root / "player.html", dpi=40)
        httpd, base = serve(root)
        try:
            browser.goto(f"{base}/player.html")
            browser.evaluate(SETTLE_JS, await_promise=True)
            browser.pump(0.5)
            # the browser asks the bare test server for /favicon.ico by itself: not the file's doing
            problems = [e for e in page_errors(browser.events, base) if "favicon.ico" not in e]
            for ev in browser.events:
                if ev["method"] == "Network.requestWillBeSent":
                    url = ev["params"]["request"]["url"]
                    if not url.startswith(base) and not url.startswith("data:"):
                        problems.append(f"requests a resource outside the file: {url[:120]}")
            buttons = browser.evaluate(BUTTONS_JS)
            if len(buttons) != 9:
                problems.append(f"player has {len(buttons)} buttons, expected 9")
            for b in buttons:
                if not b["text"]:
                    problems.append(f"button {b['title']!r} shows no symbol")
            for a in browser.evaluate(ANIMATIONS_JS, await_promise=True):
                if a["frames"] != 3 or a["bad"] or not a["changes"]:
                    problems.append(f"player frames: {a}")
            shot = browser.call("Page.captureScreenshot", format="png")
            (shots / "standalone_player.png").write_bytes(base64.b64decode(shot["data"]))
        finally:
            httpd.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return problems


# ---------------------------------------------------------------- main


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(root):
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def pages_to_check(html, tutorials):
    """The gallery index, every tutorial page (each tutorials/**/*.py must have one), the home page, the
    guide, the Results section (index and every experiment), the Performance page and every API page."""
    gallery = html / "auto_tutorials"
    if not (gallery / "index.html").is_file():
        sys.exit(f"check_site: {gallery / 'index.html'} is missing; run `make docs` first")
    pages, missing = [("auto_tutorials/index.html", False)], []
    for src in sorted(tutorials.rglob("*.py")):
        rel = src.relative_to(tutorials).with_suffix(".html")
        page = gallery / rel
        if not page.is_file():
            missing.append(f"auto_tutorials/{rel.as_posix()}")
            continue
        pages.append((f"auto_tutorials/{rel.as_posix()}", False))
    for sub in sorted(p for p in gallery.iterdir() if (p / "index.html").is_file()):
        pages.append((f"auto_tutorials/{sub.name}/index.html", False))
    for rel in ("index.html", "guide.html", "performance.html", "results/index.html", "api/index.html"):
        if not (html / rel).is_file():
            missing.append(rel)
            continue
        pages.append((rel, False))
    for folder in ("results", "api"):
        pages += [(f"{folder}/{p.name}", False) for p in sorted((html / folder).glob("*.html"))
                  if p.name != "index.html"]
    return pages, missing


class _Links(html.parser.HTMLParser):
    """The ``href`` of every ``<a>`` and the ``src`` of every ``<img>``, and every ``id`` / ``name``."""

    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag == "a" and attrs.get("href"):
            self.links.append(("link", attrs["href"]))
        elif tag == "img" and attrs.get("src"):
            self.links.append(("image", attrs["src"]))


def _parse(path, cache):
    if path not in cache:
        parser = _Links()
        parser.feed(path.read_text(errors="replace"))
        cache[path] = parser
    return cache[path]


def broken_links(html):
    """``{page: [problem, ...]}`` for links and images of every HTML file under ``html`` that point to a
    missing file of the site or to an anchor the target page lacks; links to other sites are skipped."""
    html = html.resolve()
    cache, problems = {}, {}
    for page in sorted(html.rglob("*.html")):
        for kind, url in _parse(page, cache).links:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith("data:"):
                continue  # another site, a data: image or mailto: - nothing of ours to check
            target = page if not parts.path else (page.parent / urllib.parse.unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            rel = page.relative_to(html).as_posix()
            if not target.is_file() or html not in target.parents:
                problems.setdefault(rel, []).append(f"{kind} to a missing file: {url}")
            elif parts.fragment and target.suffix == ".html" \
                    and urllib.parse.unquote(parts.fragment) not in _parse(target, cache).ids:
                problems.setdefault(rel, []).append(f"{kind} to a missing anchor: {url}")
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", type=Path, default=ROOT / "docs" / "_build" / "html")
    ap.add_argument("--tutorials", type=Path, default=ROOT / "tutorials")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "_build" / "screenshots")
    args = ap.parse_args(argv)

    pages, missing = pages_to_check(args.html, args.tutorials)
    # tutorials whose source builds an animation must show one
    animated = {
        f"auto_tutorials/{p.relative_to(args.tutorials).with_suffix('.html').as_posix()}"
        for p in args.tutorials.rglob("plot_*.py")
        if re.search(r"^ani\w* = ", p.read_text(), re.M)
    }
    pages = [(rel, rel in animated) for rel, _ in pages]

    links = broken_links(args.html)
    n_html = sum(1 for _ in args.html.rglob("*.html"))
    print(f"{'ok  ' if not links else 'FAIL'} links and images of all {n_html} HTML files", flush=True)
    for rel, problems in links.items():
        print(f"FAIL {rel}")
        for p in problems[:10]:
            print(f"       - {p}")

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    binary = find_or_install_chromium()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"check_site: {version}, {len(pages)} pages", flush=True)

    httpd, base = serve(args.html)
    browser = Browser(binary)
    failures = {m: ["page missing from the build"] for m in missing}
    failures.update({f"links in {rel}": problems for rel, problems in links.items()})
    try:
        for rel, expect_anim in pages:
            t0 = time.monotonic()
            try:
                problems, summary, shot = check_page(browser, base, rel, args.out, expect_anim)
            except Exception as exc:  # a page that cannot be checked fails
                problems, summary, shot = [f"could not check: {exc}"], "", None
            status = "ok  " if not problems else "FAIL"
            print(f"{status} {rel}  [{summary}] {time.monotonic() - t0:.1f}s", flush=True)
            for p in problems:
                print(f"       - {p}")
            if problems:
                failures[rel] = problems
        t0 = time.monotonic()
        try:
            problems = check_standalone_player(browser, args.out)
        except Exception as exc:  # a player that cannot be checked fails
            problems = [f"could not check: {exc}"]
        print(f"{'ok  ' if not problems else 'FAIL'} save_animation(..., 'player.html') offline  "
              f"{time.monotonic() - t0:.1f}s", flush=True)
        for p in problems:
            print(f"       - {p}")
        if problems:
            failures["standalone player"] = problems
    finally:
        browser.close()
        httpd.shutdown()

    print(f"check_site: screenshots in {args.out}")
    if failures:
        print(f"check_site: {len(failures)} of {len(pages) + len(missing)} pages FAILED")
        return 1
    print(f"check_site: all {len(pages)} pages passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
