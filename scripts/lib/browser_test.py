#!/usr/bin/env python3
"""The family web app in Chromium, through its visible controls (run by scripts/browser-test).

    browser_test.py --url URL --bin FRAMECAST --artifacts DIR --work DIR

URL: a running gateway (`framecast all`); FRAMECAST: the executable whose `framecast frame` is
started with the configuration file the page downloads. DIR (artifacts): one PNG per screen at
390x844 (mobile-*.png) and at 1280x900 (desktop-*.png), and on a failure failure.png,
failure.html and the browser's console. DIR (work): downloads, the frame agent's cache and log.

Each step is checked as a person would see it: by labels, button texts and messages on the page,
never by calling the API behind the page's back. Prints one line per step, then
"browser: N passed, N failed".
"""
import argparse
import glob
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PHONE = (390, 844)
DESKTOP = (1280, 900)


def chromium_options(window, extra_arguments=()):
    """Options for the headless Chromium both browser tests drive, `window` (width, height)
    large, with the test's own arguments after the shared ones."""
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={window[0]},{window[1]}", "--lang=en-US", "--no-first-run",
                     "--disable-extensions", "--disable-background-networking", "--disable-sync",
                     "--hide-scrollbars") + tuple(extra_arguments):
        options.add_argument(argument)
    return options


def start_chromium(options, log_path):
    """Chromium through chromedriver (its log at `log_path`), pages given 60 s to load."""
    service = Service(executable_path=CHROMEDRIVER, log_output=log_path)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    return driver


class Failure(Exception):
    """A check that did not hold; the message says what was expected and what was seen."""


class NotYet(Exception):
    """Not on the page (yet): `wait` asks again."""


def literal(text):
    """An XPath string literal for any text (quotes included)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


def real_photos(count):
    """Distinct real photographs from the Debian packages the scripts install."""
    candidates = sorted(glob.glob("/usr/share/wallpapers/*/contents/images/2560x1600.jpg"))
    candidates += sorted(glob.glob("/usr/share/backgrounds/mate/nature/*.jpg"))
    if len(candidates) < count:
        raise Failure(f"need {count} photos from plasma-workspace-wallpapers / mate-backgrounds, found {len(candidates)}")
    return candidates[:count]


class PageDriver:
    """Drives a page as a person does: visible labels, button texts, headings and messages.
    Shared by the family app's test (BrowserTest) and the browser frame's (browser_frame_test.py);
    a subclass sets `self.driver`, `self.artifacts`, `self.console` and `self.passed`, and may
    set `wait_interval` (seconds between polls) and the names below."""

    wait_interval = 0.25

    # What the shared pieces below call this test in their output and files.
    label = "browser"            # prefix of every line printed
    page_name = "the page"       # in a console-error failure
    failure_prefix = ""          # failure.png / .html / -console.log, or frame-failure…
    drain_each_step = False      # check the console after every step

    def screenshot(self, name):
        path = os.path.join(self.artifacts, f"{name}.png")
        self.driver.save_screenshot(path)
        return path

    def drain_console(self, page=None):
        try:
            entries = self.driver.get_log("browser")
        except WebDriverException:
            return
        self.console.extend(entries)
        # Script errors and refused loads (Content-Security-Policy) are bugs of the page; failed
        # requests (a thumbnail asked for before it is rendered answers 404) are not.
        bad = [e["message"] for e in entries
               if e.get("level") == "SEVERE" and ("Uncaught" in e["message"] or "Content Security Policy" in e["message"]
                                                  or "Refused to" in e["message"])]
        if bad:
            raise Failure(f"{page or self.page_name} logged errors: " + " | ".join(bad[:5]))

    def step(self, name, function):
        start = time.monotonic()
        try:
            function()
            if self.drain_each_step:
                self.drain_console()
        except Exception:
            print(f"{self.label}: FAILED {name} ({time.monotonic() - start:.1f} s)", flush=True)
            raise
        self.passed.append(name)
        print(f"{self.label}: ok     {name} ({time.monotonic() - start:.1f} s)", flush=True)

    def save_failure(self):
        """The page as it was when a step failed: screenshot, HTML and its console."""
        if self.driver is None:
            return
        try:
            self.screenshot(f"{self.failure_prefix}failure")
            with open(os.path.join(self.artifacts, f"{self.failure_prefix}failure.html"), "w") as f:
                f.write(self.driver.page_source)
            self.console.extend(self.driver.get_log("browser"))
        except WebDriverException:
            pass
        with open(os.path.join(self.artifacts, f"{self.failure_prefix}failure-console.log"), "w") as f:
            for entry in self.console:
                f.write(f"{entry.get('level')} {entry.get('message')}\n")

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, what, condition, timeout=20, interval=None):
        """Polls `condition` until it answers something truthy; fails with `what` after `timeout` s."""
        interval = interval or self.wait_interval
        deadline = time.monotonic() + timeout
        last_error = None
        while True:
            try:
                answer = condition()
                if answer:
                    return answer
            except (StaleElementReferenceException, NotYet) as error:
                last_error = error
            if time.monotonic() > deadline:
                raise Failure(f"timed out after {timeout} s waiting for {what}" + (f" ({last_error})" if last_error else ""))
            time.sleep(interval)

    def visible(self, xpath, scope=None):
        for element in (scope or self.driver).find_elements(By.XPATH, xpath):
            try:
                if element.is_displayed():
                    return element
            except StaleElementReferenceException:
                continue
        return None

    def control(self, label, scope=None):
        """The form control a visible <label> with exactly this text names."""
        def find():
            for element in (scope or self.driver).find_elements(By.XPATH, f".//label[normalize-space(.)={literal(label)}]"):
                if not element.is_displayed():
                    continue
                target = element.get_attribute("for")
                if target:
                    return self.driver.find_element(By.ID, target)
                inner = element.find_elements(By.XPATH, ".//input|.//select|.//textarea")
                if inner:
                    return inner[0]
            raise NotYet(f"no visible control labelled “{label}”")
        return self.wait(f"the control labelled “{label}”", find, timeout=15)

    def type_into(self, label, text, scope=None):
        element = self.control(label, scope)
        element.clear()
        element.send_keys(text)
        return element

    def button(self, text, scope=None, timeout=15):
        """A visible, enabled button with exactly this text."""
        xpath = f".//button[normalize-space(.)={literal(text)}]"

        def find():
            found = self.visible(xpath, scope)
            return found if found is not None and found.is_enabled() else None
        return self.wait(f"a button “{text}”", find, timeout=timeout)

    def open_section(self, text, scope):
        """Opens the <details> whose <summary> says `text`."""
        summary = self.wait(f"the section “{text}”", lambda: self.visible(f".//summary[normalize-space(.)={literal(text)}]", scope))
        if summary.find_element(By.XPATH, "..").get_attribute("open") is None:
            summary.click()

    def click_button(self, text, scope=None, timeout=15):
        self.button(text, scope, timeout).click()

    def link(self, text, scope=None, timeout=15):
        xpath = f".//a[normalize-space(.)={literal(text)}]"
        return self.wait(f"a link “{text}”", lambda: self.visible(xpath, scope), timeout=timeout)

    def heading(self, text, timeout=20):
        xpath = f"//h1[normalize-space(.)={literal(text)}]"
        return self.wait(f"the page “{text}”", lambda: self.visible(xpath), timeout=timeout)

    def text_on_page(self, text, timeout=20, scope=None):
        xpath = f".//*[contains(normalize-space(.), {literal(text)})][not(*[contains(normalize-space(.), {literal(text)})])]"
        return self.wait(f"the text “{text}”", lambda: self.visible(xpath, scope), timeout=timeout)



class BrowserTest(PageDriver):
    def __init__(self, args):
        self.url = args.url.rstrip("/")
        self.bin = args.bin
        self.artifacts = os.path.abspath(args.artifacts)
        self.work = os.path.abspath(args.work)
        self.downloads = os.path.join(self.work, "downloads")
        os.makedirs(self.artifacts, exist_ok=True)
        os.makedirs(self.downloads, exist_ok=True)
        for old in glob.glob(os.path.join(self.artifacts, "*.png")) + glob.glob(os.path.join(self.artifacts, "failure.*")):
            os.remove(old)
        self.driver = None
        self.frame_agent = None
        self.frame_log = None
        self.passed = []
        self.console = []
        self.email = f"grandma-{secrets.token_hex(4)}@example.com"
        self.password = f"a long secret {secrets.token_hex(4)}"

    # --- Browser ---

    def start_browser(self):
        options = chromium_options(DESKTOP, ("--password-store=basic",))
        options.add_experimental_option("prefs", {
            "download.default_directory": self.downloads,
            "download.prompt_for_download": False,
            "download.directory_upgrade": True,
            "credentials_enable_service": False,
            "profile.password_manager_enabled": False,
            "intl.accept_languages": "en-US,en",
        })
        # Network events (the status of the command request) and the console (script errors).
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = start_chromium(options, os.path.join(self.work, "chromedriver.log"))
        for command, params in (("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": self.downloads}),
                                ("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": self.downloads})):
            try:
                self.driver.execute_cdp_cmd(command, params)
                break
            except WebDriverException:
                continue

    def viewport(self, size, mobile):
        width, height = size
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    # --- Finding things as a person does ---

    def nav(self, text, h1):
        self.link(text, self.driver.find_element(By.ID, "nav")).click()
        self.heading(h1)

    def no_horizontal_scroll(self, screen):
        width, inner = self.driver.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]")
        if width > inner:
            wide = self.driver.execute_script("""
                const w = window.innerWidth;
                return [...document.querySelectorAll('body *')]
                  .filter((e) => e.getBoundingClientRect().right > w + 0.5)
                  .slice(0, 6)
                  .map((e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
                    + (typeof e.className === 'string' && e.className ? '.' + e.className.trim().split(/\\s+/).join('.') : ''));
            """)
            raise Failure(f"{screen}: the page scrolls sideways at {inner} px (scrollWidth {width}); too wide: {wide}")

    def screen(self, name):
        """A main screen at the phone's size: no sideways scrolling, and its screenshot."""
        self.no_horizontal_scroll(name)
        self.screenshot(f"mobile-{name}")
        self.drain_console()

    # --- The steps ---

    def open_app(self):
        self.viewport(PHONE, mobile=True)
        self.driver.get(self.url + "/")
        self.heading("Log in to Framecast")
        manifest = self.driver.execute_script("return document.querySelector('link[rel=manifest]')?.href")
        if not manifest:
            raise Failure("the page links no web app manifest")
        self.screen("login")

    def sign_up(self):
        self.link("Create an account").click()
        self.heading("Create your account")
        self.type_into("Your name", "Grandma")
        self.type_into("E-mail", self.email)
        self.type_into("Password", self.password)
        self.screen("signup")
        self.click_button("Create account")
        self.heading("Photos")
        self.text_on_page(f"Logged in as Grandma ({self.email})")

    def upload_three(self):
        photos = real_photos(3)
        picker = self.control("Choose photos to upload")
        if picker.get_attribute("type") != "file" or picker.get_attribute("multiple") is None:
            raise Failure("“Choose photos to upload” is not an <input type=file multiple>")
        if picker.get_attribute("accept") != "image/*":
            raise Failure(f"the file input accepts {picker.get_attribute('accept')!r}, not image/*")
        started = time.monotonic()
        picker.send_keys("\n".join(photos))
        self.text_on_page("3 photos uploaded", timeout=120)
        bars = self.driver.execute_script(
            "return [...document.querySelectorAll('.uploads progress')].map((p) => [p.value, p.max])")
        if len(bars) != 3 or any(value != maximum for value, maximum in bars):
            raise Failure(f"expected three full progress bars, saw {bars}")
        self.wait("three thumbnails in the grid", lambda: self.driver.execute_script("""
            const imgs = [...document.querySelectorAll('#photo-grid .thumb[data-state=ready] img')];
            return imgs.length === 3 && imgs.every((i) => i.complete && i.naturalWidth > 0);
        """), timeout=180)
        print(f"browser:        three photos uploaded and their thumbnails shown in {time.monotonic() - started:.1f} s", flush=True)
        self.screen("photos")

    def upload_duplicate(self):
        self.control("Choose photos to upload").send_keys(real_photos(1)[0])
        self.text_on_page("Already uploaded (duplicate)", timeout=60)
        count = self.driver.execute_script("return document.querySelectorAll('#photo-grid li').length")
        if count != 3:
            raise Failure(f"a duplicate upload changed the grid: {count} photos shown, expected 3")

    def create_album(self):
        self.nav("Albums", "Albums")
        self.type_into("Album name", "Family")
        self.click_button("Create album")
        self.text_on_page("Album “Family” created")
        self.link("Family", self.driver.find_element(By.ID, "album-list"))
        self.screen("albums")

    def add_photo_to_album(self):
        self.nav("Photos", "Photos")
        first = self.wait("the first photo of the grid",
                          lambda: self.visible("//ul[@id='photo-grid']/li[1]//a"))
        self.first_photo = first.get_attribute("href").split("#/photos/")[1]
        first.click()
        self.wait("the photo's page", lambda: self.visible("//h1[contains(@class,'photo-title')]"))
        self.wait("the hd version", lambda: self.driver.execute_script(
            "const i = document.querySelector('.hd[data-state=ready] img'); return !!i && i.naturalWidth > 0"), timeout=90)
        self.text_on_page("Taken")
        album = self.control("Album")
        self.wait("the album “Family” among the choices", lambda: any(
            o.text == "Family" for o in Select(album).options))
        Select(album).select_by_visible_text("Family")
        self.click_button("Add to album")
        self.text_on_page("Added to Family.")
        self.screen("photo")

    def album_page(self):
        self.nav("Albums", "Albums")
        self.link("Family", self.driver.find_element(By.ID, "album-list")).click()
        self.heading("Family")
        self.wait("the album's photo", lambda: self.driver.execute_script("""
            const imgs = [...document.querySelectorAll('#album-photos .thumb[data-state=ready] img')];
            return imgs.length === 1 && imgs[0].naturalWidth > 0;
        """), timeout=90)
        self.text_on_page("Grandma (" + self.email + ")")
        # A member who has no account: the page says so.
        self.type_into("Their e-mail", f"nobody-{secrets.token_hex(3)}@example.com")
        self.click_button("Add member")
        self.text_on_page("There is no Framecast account with that e-mail")
        self.screen("album")

    def register_frame(self):
        self.nav("Frames", "Frames")
        form = self.wait("the form “Register a Linux frame”", lambda: self.visible(
            "//form[.//h3[normalize-space(.)='Register a Linux frame']]"))
        self.type_into("Frame name", "Kitchen", form)
        self.type_into("Screen width (pixels)", "1024", form)
        self.type_into("Screen height (pixels)", "600", form)
        self.click_button("Register frame", form)
        self.text_on_page("Kitchen is registered", scope=form)
        download = self.wait("the configuration file's link", lambda: self.visible(
            "//a[starts-with(normalize-space(.), 'Download configuration file')]"))
        expected = os.path.join(self.downloads, "framecast-frame-kitchen.json")
        download.click()
        self.wait("the downloaded configuration file", lambda: os.path.exists(expected)
                  and not glob.glob(os.path.join(self.downloads, "*.crdownload")), timeout=30)
        with open(expected) as f:
            config = json.load(f)
        for key in ("frame_id", "frame_token", "mqtt", "frame"):
            if key not in config:
                raise Failure(f"the configuration file has no {key}: {sorted(config)}")
        self.config_path = expected
        self.frame_id = config["frame_id"]

    def frame_card(self):
        return self.wait("the frame “Kitchen” in the list", lambda: self.visible(
            "//article[contains(@class,'frame-card')][.//h3[normalize-space(.)='Kitchen']]"))

    def badge(self):
        return self.frame_card().find_element(By.CSS_SELECTOR, ".badge").text.strip()

    def frame_online(self):
        self.frame_log = open(os.path.join(self.work, "frame-agent.log"), "w")
        environment = dict(os.environ, FRAMECAST_LOG_LEVEL="info", FRAMECAST_FRAME_HEARTBEAT_SECONDS="5")
        started = time.monotonic()
        # As the page says, with the file it downloaded (and no screen: --display none).
        self.frame_agent = subprocess.Popen(
            [self.bin, "frame", "--config", self.config_path, "--gateway", self.url, "--display", "none",
             "--cache-dir", os.path.join(self.work, "frame-cache")],
            stdout=self.frame_log, stderr=subprocess.STDOUT, env=environment)
        # The page polls every 5 s: "Online" shows without reloading it.
        def online():
            if self.frame_agent.poll() is not None:
                raise Failure(f"framecast frame exited with status {self.frame_agent.returncode} (its log: frame-agent.log)")
            return self.badge() == "Online"
        self.wait("“Online” on the frame's card (framecast frame running)", online, timeout=90)
        print(f"browser:        the frame shows online on the page {time.monotonic() - started:.1f} s after it started", flush=True)
        heartbeat = self.frame_card().find_element(By.CSS_SELECTOR, ".frame-meta").text
        if "Last heartbeat: never" in heartbeat:
            self.wait("a heartbeat", lambda: "Last heartbeat: never" not in
                      self.frame_card().find_element(By.CSS_SELECTOR, ".frame-meta").text, timeout=30)

    def frame_album(self):
        card = self.frame_card()
        self.open_section("Albums it shows", card)
        box = self.control("Family", card)
        if not box.is_selected():
            box.click()
        self.click_button("Save albums", card)
        self.text_on_page("Saved: Kitchen shows 1 album.", scope=card)

    def send_next(self):
        card = self.frame_card()
        self.driver.get_log("performance")  # start from here
        self.click_button("Next", card)
        self.text_on_page("“Next” sent to Kitchen.", scope=card)
        statuses = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") != "Network.responseReceived":
                continue
            response = message["params"]["response"]
            if response["url"].endswith(f"/api/v1/frames/{self.frame_id}/commands"):
                statuses.append(response["status"])
        if not statuses or not all(200 <= s < 300 for s in statuses):
            raise Failure(f"the command's answer was not 2xx: statuses {statuses}")
        command_id = self.button("Next", card).get_attribute("data-command-id")
        if not command_id:
            raise Failure("the page kept no command id from the answer")

    def photo_on_frame(self):
        started = time.monotonic()
        self.wait("the photo the frame shows, on its card", lambda: self.driver.execute_script("""
            const card = [...document.querySelectorAll('.frame-card')].find((c) => c.querySelector('h3')?.textContent === 'Kitchen');
            const img = card?.querySelector('.now-showing .thumb[data-state=ready] img');
            return !!img && img.naturalWidth > 0;
        """), timeout=120)
        print(f"browser:        the frame's photo on its card {time.monotonic() - started:.1f} s after its album was chosen", flush=True)
        self.frame_card().location_once_scrolled_into_view
        self.screen("frames")

    def frame_settings(self):
        card = self.frame_card()
        self.open_section("Settings", card)
        self.type_into("Seconds per photo", "10", card)
        shuffle = self.control("Shuffle (random order)", card)
        if not shuffle.is_selected():
            shuffle.click()
        self.click_button("Save settings", card)
        self.text_on_page("Settings saved", scope=card)

    def delete_photo(self):
        self.nav("Photos", "Photos")
        last = self.wait("the last photo of the grid", lambda: self.visible("//ul[@id='photo-grid']/li[last()]//a"))
        last.click()
        self.wait("the photo's page", lambda: self.visible("//h1[contains(@class,'photo-title')]"))
        self.click_button("Delete photo")
        dialog = self.wait("the confirmation", lambda: self.visible("//dialog[@open]"))
        self.screenshot("mobile-delete-confirmation")
        self.click_button("Delete photo", dialog)
        self.heading("Photos")
        self.text_on_page("was deleted")
        self.wait("two photos left", lambda: self.driver.execute_script(
            "return document.querySelectorAll('#photo-grid li').length === 2"), timeout=20)

    def bad_input(self):
        self.click_button("Log out")
        self.heading("Log in to Framecast")
        self.type_into("E-mail", self.email)
        self.type_into("Password", "not the password")
        self.click_button("Log in")
        self.text_on_page("Wrong e-mail or password")
        self.screen("login-wrong-password")
        self.link("Create an account").click()
        self.heading("Create your account")
        self.type_into("Your name", "Grandma again")
        self.type_into("E-mail", self.email)
        self.type_into("Password", "another long secret")
        self.click_button("Create account")
        self.text_on_page("An account with this e-mail already exists")
        self.screen("signup-email-taken")

    def log_in(self):
        self.link("Log in").click()
        self.heading("Log in to Framecast")
        self.type_into("E-mail", self.email)
        self.type_into("Password", self.password)
        self.click_button("Log in")
        self.heading("Photos")

    def desktop(self):
        self.viewport(DESKTOP, mobile=False)
        for name, target, h1 in (("photos", "#/photos", "Photos"), ("albums", "#/albums", "Albums"),
                                 ("frames", "#/frames", "Frames")):
            self.driver.get(f"{self.url}/{target}")
            self.heading(h1)
            if name == "photos":
                self.wait("the thumbnails", lambda: self.driver.execute_script(
                    "return document.querySelectorAll('#photo-grid .thumb[data-state=ready]').length === 2"), timeout=60)
            if name == "frames":
                self.frame_card()
                self.wait("the frame's photo", lambda: self.driver.execute_script(
                    "return !!document.querySelector('.now-showing .thumb[data-state=ready]')"), timeout=60)
            self.no_horizontal_scroll(f"desktop {name}")
            self.screenshot(f"desktop-{name}")
        self.drain_console()
        self.viewport(PHONE, mobile=True)

    def frame_offline(self):
        self.driver.get(f"{self.url}/#/frames")
        self.heading("Frames")
        self.wait("“Online” first", lambda: self.badge() == "Online", timeout=30)
        self.frame_agent.send_signal(signal.SIGTERM)
        try:
            self.frame_agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.frame_agent.kill()
            self.frame_agent.wait()
            raise Failure("framecast frame did not stop within 30 s of SIGTERM")
        self.wait("“Offline” on the frame's card", lambda: self.badge() == "Offline", timeout=30)

    # --- Run ---

    def run(self):
        steps = [
            ("the app opens on the login page (manifest linked)", self.open_app),
            ("sign up", self.sign_up),
            ("upload three photos at once: three progress bars, three thumbnails", self.upload_three),
            ("the same photo again is shown as a duplicate", self.upload_duplicate),
            ("create the album Family", self.create_album),
            ("the photo's page: hd version, details; add it to Family", self.add_photo_to_album),
            ("the album's page: its photo, members; a member without an account", self.album_page),
            ("register a frame and download its configuration file", self.register_frame),
            ("framecast frame with that file: online on the page, without reloading", self.frame_online),
            ("choose the frame's album", self.frame_album),
            ("send next: 2xx and the page's confirmation", self.send_next),
            ("the photo on the frame's screen, on its card", self.photo_on_frame),
            ("the frame's settings", self.frame_settings),
            ("delete a photo, after its confirmation", self.delete_photo),
            ("wrong password and e-mail taken: their messages", self.bad_input),
            ("log in", self.log_in),
            ("desktop size: no sideways scrolling, screenshots", self.desktop),
            ("the frame stops: offline on the page", self.frame_offline),
        ]
        failed = 0
        try:
            self.start_browser()
            for name, function in steps:
                self.step(name, function)
            self.drain_console()
        except Exception as error:
            failed = 1
            print(f"browser: {error if isinstance(error, Failure) else traceback.format_exc()}", file=sys.stderr, flush=True)
            self.save_failure()
        finally:
            self.stop()
        print(f"browser: {len(self.passed)} passed, {failed} failed", flush=True)
        return failed == 0

    def stop(self):
        if self.frame_agent and self.frame_agent.poll() is None:
            self.frame_agent.terminate()
            try:
                self.frame_agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.frame_agent.kill()
                self.frame_agent.wait()
        if self.frame_log:
            self.frame_log.close()
        if self.driver:
            try:
                self.driver.quit()
            except WebDriverException:
                pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--artifacts", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    # scripts/browser-test's timeout sends SIGTERM: stop the frame agent and the browser on it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return 0 if BrowserTest(args).run() else 1


if __name__ == "__main__":
    sys.exit(main())
