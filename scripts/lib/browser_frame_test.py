#!/usr/bin/env python3
"""The browser frame (/frame) in Chromium (run by scripts/browser-test after the family app's test).

    browser_frame_test.py --url URL --artifacts DIR --work DIR

URL: a running gateway (`framecast all`) that knows the broker's WebSocket URL
(FRAMECAST_MQTT_WS_URL). The page is opened through a small loopback relay to URL that the test
can cut: the page, its service worker, its API calls and photo downloads all go through it, so
"no network" is real, not only the browser's emulation. The owner's side goes straight to URL
through the API, as a phone would: sign up, an album, pairing with the code the page shows,
uploads, a command, a deleted photo, the frame deleted; and once through the family app (/, in a
second window, logged in as the owner) to pair the page again by its form.

Steps, each checked on the page (its elements and pixels) and through the API:
pairing by the code in #pairing-code (the frame gets the page's screen); a photo pushed and on
screen, its pixels equal to its frame:1024x600 version (the measured upload → on-screen time is
printed); `displayed` reported; a second photo, then `next` obeyed; a deleted photo leaving the
screen and the frame's cache; a reload with the network cut showing the kept photo, and the
frame reconnecting by itself when the network returns (a new photo arrives); rotation to
portrait re-registering 600x1024 and showing the frame:600x1024 version; the frame deleted and
the page pairing again; the page paired again from the family app's form “Pair a tablet or
browser frame” (a wrong code first: its message, and no frame; then the code the page shows, a
name and the album: “… is paired”, the page online as that frame, “Online” on its card; then
that frame deleted). Screenshots (frame-*.png) go to DIR (artifacts).
Prints one line per step, then "browser frame: N passed, N failed".
"""
import argparse
import json
import mimetypes
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser_test import Failure, NotYet, PageDriver, chromium_options, literal, real_photos, start_chromium  # noqa: E402

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

LANDSCAPE = (1024, 600)
PORTRAIT = (600, 1024)
CODE = re.compile(r"^[2-9A-HJKMNP-Z]{3}-[2-9A-HJKMNP-Z]{3}$")
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # Sources/Gateway/Pairings.swift
PAIR_FORM = "//form[.//h3[normalize-space(.)='Pair a tablet or browser frame']]"
PHOTO_CACHE = "framecast-frame-photos-v1"


class Relay:
    """A TCP relay on a free loopback port to (host, port). `cut()` drops every connection and
    closes new ones at once (the page sees a lost network); `restore()` relays again."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(128)
        self.port = self.server.getsockname()[1]
        self.up = True
        self.running = True
        self.lock = threading.Lock()
        self.sockets = set()
        threading.Thread(target=self.accept, name="relay-accept", daemon=True).start()

    def accept(self):
        while self.running:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up:
                self.close_quietly(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                self.close_quietly(client)
                continue
            with self.lock:
                self.sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), name="relay-pump", daemon=True).start()

    def pump(self, source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self.lock:
                for s in (source, sink):
                    if s in self.sockets:
                        self.sockets.discard(s)
                        self.close_quietly(s)

    @staticmethod
    def close_quietly(s):
        try:
            s.close()
        except OSError:
            pass

    def cut(self):
        self.up = False
        with self.lock:
            doomed = list(self.sockets)
            self.sockets.clear()
        for s in doomed:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_quietly(s)

    def restore(self):
        self.up = True

    def close(self):
        self.running = False
        self.cut()
        self.close_quietly(self.server)


class FrameTest(PageDriver):
    # The frame's timings (upload → on screen) are polled finely.
    wait_interval = 0.1
    label = "browser frame"
    page_name = "the frame page"
    failure_prefix = "frame-"
    drain_each_step = True

    def __init__(self, args):
        self.url = args.url.rstrip("/")
        self.artifacts = os.path.abspath(args.artifacts)
        self.work = os.path.abspath(args.work)
        os.makedirs(self.artifacts, exist_ok=True)
        os.makedirs(self.work, exist_ok=True)
        parsed = urllib.parse.urlsplit(self.url)
        self.relay = Relay(parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.page = f"http://127.0.0.1:{self.relay.port}"
        self.driver = None
        self.passed = []
        self.console = []
        self.token = None
        self.email = None
        self.password = None
        self.album = None
        self.frame_id = None
        self.photos = real_photos(4)
        self.files = []
        self.times = []

    # --- The owner's side: the API, straight to the gateway ---

    def api(self, method, path, body=None, token=None, raw=None, content_type=None, expect=None):
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if raw is not None:
            data = raw
            headers["Content-Type"] = content_type
        if token or self.token:
            headers["Authorization"] = f"Bearer {token or self.token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = None
        if expect is not None and status not in (expect if isinstance(expect, tuple) else (expect,)):
            raise Failure(f"{method} {path}: expected {expect}, got {status}: {str(answer)[:300]}")
        return status, answer

    def upload(self, path):
        boundary = f"framecast-{uuid.uuid4().hex}"
        with open(path, "rb") as f:
            content = f.read()
        metadata = json.dumps({"album_id": self.album}).encode()
        body = b"".join([
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{os.path.basename(path)}\"\r\n".encode(),
            f"Content-Type: {mimetypes.guess_type(path)[0] or 'image/jpeg'}\r\n\r\n".encode(), content, b"\r\n",
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n".encode(), metadata, b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ])
        _, answer = self.api("POST", "/api/v1/storage/photos/upload", raw=body,
                             content_type=f"multipart/form-data; boundary={boundary}", expect=(200, 201))
        return answer["file_id"]

    def frame(self):
        return self.api("GET", f"/api/v1/frames/{self.frame_id}", expect=200)[1]

    def frames(self):
        return self.api("GET", "/api/v1/frames", expect=200)[1]["frames"]

    # --- Browser ---

    def start_browser(self):
        options = chromium_options(LANDSCAPE, (
            "--force-color-profile=srgb",
            # A frame is always in front: no throttled timers in a background tab.
            "--disable-background-timer-throttling", "--disable-renderer-backgrounding"))
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = start_chromium(options, os.path.join(self.work, "chromedriver-frame.log"))
        self.driver.set_script_timeout(60)

    def viewport(self, size):
        width, height = size
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False,
            "screenOrientation": {"type": "portraitPrimary" if height > width else "landscapePrimary",
                                  "angle": 0 if height > width else 90}})

    def shown(self):
        """The file on screen, its version, when it was shown, and the visible image's size."""
        return self.js("""
            const s = document.getElementById('screen');
            const img = document.querySelector('#screen .layer.visible');
            return s.hidden ? null : {file: s.dataset.fileId || null, version: s.dataset.version || null,
              at: Number(s.dataset.shownAt || 0), w: img ? img.naturalWidth : 0, h: img ? img.naturalHeight : 0,
              state: document.documentElement.dataset.frameState};
        """)

    def showing(self, file, timeout=30):
        def check():
            now = self.shown()
            return now if now and now["file"] == file and now["w"] > 0 else None
        return self.wait(f"photo {file} on the frame's screen", check, timeout=timeout, interval=0.05)

    def settle(self):
        """Waits for the cross-fade (1 s) to end."""
        at = self.shown()["at"] / 1000
        time.sleep(max(0.0, at + 1.6 - time.time()))

    def page_path(self, url):
        """A capability URL as the page fetches it: the same path, on the page's own origin."""
        parts = urllib.parse.urlsplit(url).path.split("/")
        if len(parts) < 7 or parts[-6] != "c":
            raise Failure(f"not a capability URL: {url}")
        return "/" + "/".join(parts[-6:])

    def version_url(self, file, size):
        def find():
            _, doc = self.api("GET", f"/api/v1/photos/{file}")
            for version in (doc or {}).get("versions", []):
                if version.get("size") == size and version.get("format", "jpeg") == "jpeg":
                    return version["url"]
            return None
        return self.wait(f"the {size} version of {file}", find, timeout=60, interval=0.5)

    def pixels_match(self, file, size):
        """The screen's pixels against the version's own bytes, decoded by the same browser."""
        self.settle()
        path = self.page_path(self.version_url(file, size))
        width, height = (int(x) for x in size.split(":")[1].split("x"))
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})["data"]
        result = self.driver.execute_async_script("""
            const [shot, path, done] = arguments;
            (async () => {
              const png = Uint8Array.from(atob(shot), (c) => c.charCodeAt(0));
              const screen = await createImageBitmap(new Blob([png], {type: 'image/png'}));
              const response = await fetch(path, {cache: 'no-store', credentials: 'omit'});
              if (!response.ok) return done({error: `the version answered ${response.status}`});
              const version = await createImageBitmap(await response.blob());
              if (screen.width !== version.width || screen.height !== version.height) {
                return done({error: `screen ${screen.width}x${screen.height}, version ${version.width}x${version.height}`});
              }
              const canvas = new OffscreenCanvas(version.width, version.height);
              const ctx = canvas.getContext('2d', {willReadFrequently: true});
              ctx.drawImage(screen, 0, 0);
              const a = ctx.getImageData(0, 0, version.width, version.height).data;
              ctx.clearRect(0, 0, version.width, version.height);
              ctx.drawImage(version, 0, 0);
              const b = ctx.getImageData(0, 0, version.width, version.height).data;
              let sum = 0, far = 0;
              for (let i = 0; i < a.length; i += 4) {
                for (let c = 0; c < 3; c++) {
                  const d = Math.abs(a[i + c] - b[i + c]);
                  sum += d;
                  if (d > 24) far += 1;
                }
              }
              const n = version.width * version.height * 3;
              done({mean: sum / n, far: far / n, width: version.width, height: version.height});
            })().catch((e) => done({error: String(e)}));
        """, shot, path)
        if result.get("error"):
            raise Failure(f"pixel check of {file} ({size}): {result['error']}")
        if result["mean"] > 6 or result["far"] > 0.01:
            raise Failure(f"the screen does not show {file}'s {size} version: mean difference {result['mean']:.2f}, "
                          f"{result['far'] * 100:.2f} % of values off by more than 24")
        print(f"browser frame:  pixels of {size} on screen: mean difference {result['mean']:.2f} (0-255)", flush=True)

    def in_cache(self, file):
        return self.driver.execute_async_script("""
            const [name, file, done] = arguments;
            caches.open(name).then((c) => c.match('/frame/photos/' + encodeURIComponent(file))).then((r) => done(!!r), () => done(null));
        """, PHOTO_CACHE, file)

    # --- Steps ---

    def pairing(self):
        self.viewport(LANDSCAPE)
        self.driver.get(self.page + "/frame")

        def code():
            text = self.js("const e = document.getElementById('pairing-code'); return e && !e.closest('[hidden]') ? e.textContent.trim() : ''")
            return text if CODE.match(text or "") else None
        try:
            shown = self.wait("a pairing code in #pairing-code", code, timeout=30)
        except Failure as error:
            status = self.js("return document.getElementById('pairing-status')?.textContent || ''")
            raise Failure(f"{error}; the page says: {status!r}") from None
        size = self.js("return [innerWidth, innerHeight, devicePixelRatio]")
        if size != [LANDSCAPE[0], LANDSCAPE[1], 1]:
            raise Failure(f"the viewport is {size}, not {LANDSCAPE} at 1x")
        self.screenshot("frame-pairing")
        self.drain_console()
        self.email = f"tablet-{secrets.token_hex(4)}@example.com"
        self.password = f"a long secret {secrets.token_hex(4)}"
        _, session = self.api("POST", "/api/v1/auth/signup", {"email": self.email, "password": self.password,
                                                            "name": "Tablet owner"}, expect=201)
        self.token = session["token"]
        _, album = self.api("POST", "/api/v1/albums", {"name": "Kitchen wall"}, expect=201)
        self.album = album["album_id"]
        _, frame = self.api("POST", "/api/v1/frames/pair", {"code": shown, "name": "Tablet", "album_ids": [self.album]}, expect=201)
        self.frame_id = frame["frame_id"]
        if (frame["width"], frame["height"]) != LANDSCAPE:
            raise Failure(f"the paired frame has the screen {frame['width']}x{frame['height']}, not the page's {LANDSCAPE}")
        self.wait("the page connected as the frame (data-frame-state=online)",
                  lambda: self.js("return document.documentElement.dataset.frameState") == "online", timeout=30)
        self.wait("the frame online in the API", lambda: self.frame().get("online") is True, timeout=30)
        if self.js("return localStorage.getItem('framecast.frame')") is None:
            raise Failure("the page kept no credentials in localStorage")

    def push(self):
        file = self.upload(self.photos[0])
        uploaded = time.monotonic()
        self.files.append(file)
        self.showing(file, timeout=60)
        elapsed = time.monotonic() - uploaded
        self.times.append(elapsed)
        print(f"browser frame:  upload → on the page's screen: {elapsed:.2f} s", flush=True)
        now = self.shown()
        if now["version"] != "frame:1024x600" or (now["w"], now["h"]) != LANDSCAPE:
            raise Failure(f"the page shows {now}, not the frame:1024x600 version")
        self.pixels_match(file, "frame:1024x600")
        self.screenshot("frame-photo")

    def displayed(self):
        file = self.files[0]

        def reported():
            return any(s.get("last_displayed_file_id") == file for s in self.frame().get("sync_status", []))
        self.wait("the frame's `displayed` report in GET /api/v1/frames/{id}", reported, timeout=20, interval=0.5)

    def next_command(self):
        # Long enough that only `next` moves the slideshow.
        self.api("PUT", f"/api/v1/frames/{self.frame_id}/config", {"interval_seconds": 3600, "shuffle": False}, expect=200)
        second = self.upload(self.photos[1])
        uploaded = time.monotonic()
        self.files.append(second)
        self.showing(second, timeout=60)
        self.times.append(time.monotonic() - uploaded)
        print(f"browser frame:  upload → on the page's screen: {self.times[-1]:.2f} s", flush=True)
        self.api("POST", f"/api/v1/frames/{self.frame_id}/commands", {"command": "next"}, expect=202)
        self.showing(self.files[0], timeout=20)

    def deleted_photo(self):
        on_screen = self.files[0]
        if not self.in_cache(on_screen):
            raise Failure("the photo on screen is not in the frame's cache")
        self.api("DELETE", f"/api/v1/storage/files/{on_screen}", expect=204)
        self.showing(self.files[1], timeout=30)
        self.wait("the deleted photo gone from the frame's cache", lambda: self.in_cache(on_screen) is False, timeout=15)

    def offline_reload(self):
        self.wait("the service worker controlling the page",
                  lambda: self.js("return !!navigator.serviceWorker && !!navigator.serviceWorker.controller"), timeout=30)
        kept = self.files[1]
        self.relay.cut()
        self.driver.set_network_conditions(offline=True, latency=0, download_throughput=500 * 1024, upload_throughput=500 * 1024)
        try:
            self.driver.refresh()
            self.showing(kept, timeout=30)
            now = self.shown()
            if now["version"] != "frame:1024x600":
                raise Failure(f"offline, the page shows {now}")
            self.screenshot("frame-offline")
            time.sleep(2)
        finally:
            self.driver.delete_network_conditions()
            self.relay.restore()
        self.wait("the page reconnected by itself (data-frame-state=online)",
                  lambda: self.js("return document.documentElement.dataset.frameState") == "online", timeout=90, interval=0.5)
        third = self.upload(self.photos[2])
        uploaded = time.monotonic()
        self.files.append(third)
        self.showing(third, timeout=60)
        self.times.append(time.monotonic() - uploaded)
        print(f"browser frame:  after the network came back, upload → on the page's screen: {self.times[-1]:.2f} s", flush=True)

    def rotation(self):
        self.viewport(PORTRAIT)

        def registered():
            frame = self.frame()
            return (frame["width"], frame["height"]) == PORTRAIT and frame["orientation"] == "portrait"
        self.wait("the frame's screen registered again as 600x1024 portrait", registered, timeout=30, interval=0.5)

        def portrait():
            now = self.shown()
            return now if now and now["version"] == "frame:600x1024" and (now["w"], now["h"]) == PORTRAIT else None
        now = self.wait("the frame:600x1024 version on screen", portrait, timeout=120, interval=0.25)
        self.pixels_match(now["file"], "frame:600x1024")
        self.screenshot("frame-portrait")

    def deleted_frame(self):
        self.api("DELETE", f"/api/v1/frames/{self.frame_id}", expect=204)

        def code():
            text = self.js("const e = document.getElementById('pairing-code'); return e && !e.closest('[hidden]') ? e.textContent.trim() : ''")
            return CODE.match(text or "")
        self.wait("the page pairing again (a new code)", code, timeout=120, interval=0.5)
        if self.js("return localStorage.getItem('framecast.frame')") is not None:
            raise Failure("the deleted frame's credentials are still in localStorage")
        self.screenshot("frame-pairing-again")

    def pair_form(self):
        """The page, pairing again, paired by the owner in the family app's form (a second window,
        as a phone next to the tablet): a wrong code first, then the code the page shows."""
        def code():
            text = self.js("const e = document.getElementById('pairing-code'); return e && !e.closest('[hidden]') ? e.textContent.trim() : ''")
            return text if CODE.match(text or "") else None
        shown = self.wait("a pairing code in #pairing-code", code, timeout=30)
        screen = self.js("return [Math.round(innerWidth * devicePixelRatio), Math.round(innerHeight * devicePixelRatio)]")
        wrong = shown
        while wrong == shown:
            wrong = "-".join("".join(secrets.choice(CODE_ALPHABET) for _ in range(3)) for _ in range(2))
        before = {f["frame_id"] for f in self.frames()}
        name = "Hall tablet"
        page = self.driver.current_window_handle
        self.driver.switch_to.new_window("window")
        app = self.driver.current_window_handle
        self.driver.get(self.url + "/#/frames")
        self.heading("Log in to Framecast")
        self.type_into("E-mail", self.email)
        self.type_into("Password", self.password)
        self.click_button("Log in")
        self.heading("Frames")
        form = self.wait("the form “Pair a tablet or browser frame”", lambda: self.visible(PAIR_FORM), timeout=30, interval=0.25)
        album = self.control("Kitchen wall", form)
        if album.get_attribute("type") != "checkbox":
            raise Failure(f"the album “Kitchen wall” in the form is not a checkbox: {album.get_attribute('outerHTML')[:200]}")

        # A wrong code: the form's message, and no frame.
        self.type_into("Code on the frame", wrong, form)
        self.type_into("Frame name", name, form)
        if not album.is_selected():
            album.click()
        self.click_button("Pair frame", form)
        self.text_on_page("No frame is waiting with that code", scope=form)
        if self.visible(".//*[contains(normalize-space(.), 'is paired')]", form) is not None:
            raise Failure(f"the wrong code {wrong} was answered “… is paired”")
        if {f["frame_id"] for f in self.frames()} != before:
            raise Failure(f"the wrong code {wrong} paired a frame")
        self.screenshot("frame-pair-wrong-code")

        # The code on the page: paired, with the page's screen and the album ticked.
        self.type_into("Code on the frame", shown, form)
        if not album.is_selected():
            album.click()
        self.click_button("Pair frame", form)
        submitted = time.monotonic()
        self.text_on_page(f"{name} is paired", scope=form, timeout=30)
        new = [f for f in self.frames() if f["frame_id"] not in before]
        if len(new) != 1 or new[0]["name"] != name:
            raise Failure(f"after “Pair frame”, the new frames are {[(f['frame_id'], f['name']) for f in new]}, not one “{name}”")
        frame = new[0]
        self.frame_id = frame["frame_id"]
        if [frame["width"], frame["height"]] != screen:
            raise Failure(f"the paired frame has the screen {frame['width']}x{frame['height']}, not the page's {screen[0]}x{screen[1]}")
        if frame["album_ids"] != [self.album]:
            raise Failure(f"the paired frame shows the albums {frame['album_ids']}, not the one ticked ({self.album})")

        # The page leaves pairing and runs as that frame.
        self.driver.switch_to.window(page)
        self.wait("the page connected as the frame (data-frame-state=online)",
                  lambda: self.js("return document.documentElement.dataset.frameState") == "online", timeout=30)
        print(f"browser frame:  “Pair frame” → the page online: {time.monotonic() - submitted:.2f} s", flush=True)
        if not self.js("return document.getElementById('pairing').hidden && !document.getElementById('screen').hidden"):
            raise Failure("online, the page still shows pairing, not its screen")
        self.wait("the frame online in the API", lambda: self.frame().get("online") is True, timeout=30)
        kept = self.js("return localStorage.getItem('framecast.frame')")
        if kept is None or json.loads(kept).get("frame_id") != self.frame_id:
            raise Failure(f"the page kept no credentials of the paired frame {self.frame_id} in localStorage")
        self.screenshot("frame-paired-by-form")

        # The owner sees it online, without reloading.
        self.driver.switch_to.window(app)
        badge = f"//article[contains(@class,'frame-card')][.//h3[normalize-space(.)={literal(name)}]]//span[contains(@class,'badge')]"

        def online_on_card():
            found = self.visible(badge)
            return found is not None and found.text.strip() == "Online"
        self.wait(f"“Online” on the card of {name}", online_on_card, timeout=30, interval=0.25)
        self.screenshot("frame-pair-form")
        self.drain_console("the family app")
        self.driver.close()
        self.driver.switch_to.window(page)
        self.api("DELETE", f"/api/v1/frames/{self.frame_id}", expect=204)

    # --- Run ---

    def run(self):
        steps = [
            ("/frame shows a code; paired from the API, it gets the page's screen and goes online", self.pairing),
            ("a photo uploaded is pushed and on screen, pixels equal to its frame:1024x600 version", self.push),
            ("`displayed` reported", self.displayed),
            ("`next` obeyed", self.next_command),
            ("a deleted photo leaves the screen and the cache", self.deleted_photo),
            ("reloaded without network it shows the kept photo; it reconnects by itself", self.offline_reload),
            ("rotated to portrait: 600x1024 registered, its version shown", self.rotation),
            ("the frame deleted: the page pairs again", self.deleted_frame),
            ("paired again from the family app's form: a wrong code refused, the right one pairs it and it goes online",
             self.pair_form),
        ]
        failed = 0
        try:
            self.start_browser()
            for name, function in steps:
                self.step(name, function)
        except Exception as error:
            failed = 1
            print(f"browser frame: {error if isinstance(error, Failure) else traceback.format_exc()}", file=sys.stderr, flush=True)
            self.save_failure()
        finally:
            self.stop()
        if self.times:
            print("browser frame: upload → on-screen times (s): " + ", ".join(f"{t:.2f}" for t in self.times), flush=True)
        print(f"browser frame: {len(self.passed)} passed, {failed} failed", flush=True)
        return failed == 0

    def stop(self):
        if self.driver:
            try:
                self.driver.quit()
            except WebDriverException:
                pass
        self.relay.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--artifacts", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return 0 if FrameTest(args).run() else 1


if __name__ == "__main__":
    sys.exit(main())
