#!/usr/bin/env python3
"""End-to-end test of the tenant console in a real headless Chromium.

The demo's set-up (envoy/demo/envoy.yaml.tmpl: a real Envoy with the guard,
TLS 1.3, two echo upstreams, a metadata-only access log) on free loopback
ports, a store made with the real `tokenhub-admin` CLI, and
`tokenhub-admin serve` (which serves the console and publishes every change
to the ECDS file Envoy watches). Selenium drives Debian's chromium through
chromium-driver (no browser download at run time):

  sign-in of a tenant admin without 2FA, 2FA enrolment from the QR code
  (screenshotted and decoded with zbarimg, its secret checked against the
  one shown beside it), recovery codes (shown once, downloaded once);
  a change without a 2FA code refused; create a key (shown once, copy
  button) and use it through Envoy; rotate it and see the old secret
  refused; edit the IP allowlist (lock-out warning, Envoy refuses, then
  allows again); revoke it as an incident and see Envoy refuse it; another
  tenant's key neither listed nor reachable by URL, and forged requests
  (another tenant's key, no CSRF token, a foreign Origin, a foreign Host)
  refused; the usage charts and tables (requests, tokens, cost per key and
  day); the audit log with every action and `verify`
  intact; a platform admin signing in with TOTP and seeing both tenants.

Usage: console_e2e.py --admin BIN --echo BIN --wasm FILE --envoy BIN
                      [--screenshots DIR]
Exit 0 when every check passed; the first failed check is printed.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from harness.common import stop_processes  # noqa: E402

# Selenium Manager must not look for (or download) a browser or a driver.
os.environ["SE_OFFLINE"] = "true"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "envoy", "demo", "envoy.yaml.tmpl")
WAIT = 15.0  # seconds: bounded waits for Envoy to load a published bundle


def log(msg):
    print(f"console-e2e: {msg}", flush=True)


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)
    log(f"ok: {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def decode_qr(element, png):
    """What a phone's authenticator reads: the element as Chromium paints it,
    decoded by zbarimg (Debian zbar-tools)."""
    with open(png, "wb") as f:
        f.write(element.screenshot_as_png)
    out = subprocess.run(["zbarimg", "--raw", "--quiet", png], capture_output=True, text=True, timeout=30)
    decoded = out.returncode == 0 and out.stdout.strip()
    check(decoded, "zbarimg decodes the QR screenshot" + ("" if decoded else f": {out.stderr.strip()}"))
    return out.stdout.strip()


def totp(secret_b32, at=None):
    """The code an authenticator app shows (RFC 6238: SHA-1, 6 digits, 30 s)."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if at is None else at) // 30)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    return f"{(struct.unpack('>I', mac[off:off + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def fresh_totp(secret_b32, used_steps):
    """A code of a time step not used yet (a code works once): waits for
    the next step when this one is spent."""
    while int(time.time() // 30) in used_steps:
        time.sleep(0.5)
    used_steps.add(int(time.time() // 30))
    return totp(secret_b32)


class Rig:
    """Store, Envoy, echo upstreams and the admin service, stopped on exit."""

    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="thg-console-")
        self.procs = []
        self.env = dict(os.environ)
        for k in ("TOKENHUB_MASTER_KEY", "TOKENHUB_ADMIN", "TOKENHUB_OTP"):
            self.env.pop(k, None)
        self.env["TOKENHUB_HOME"] = os.path.join(self.dir, "admin")
        self.env["TOKENHUB_MASTER_KEY_FILE"] = os.path.join(self.dir, "master.key")
        self.access_log = os.path.join(self.dir, "access.log")

    def admin(self, *argv, stdin=None):
        r = subprocess.run([self.args.admin, "--json", *argv], env=self.env, input=stdin,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise Failed(f"tokenhub-admin {argv[0]} {argv[1] if len(argv) > 1 else ''}: {r.stderr.strip()}")
        out = r.stdout.strip()
        return json.loads(out) if out.startswith(("{", "[")) else out

    def start(self):
        d = self.dir
        os.makedirs(os.path.join(d, "bundle"))
        os.makedirs(os.path.join(d, "tls"))
        old = os.umask(0o077)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", f"{d}/tls/tls.key", "-out", f"{d}/tls/tls.crt"],
                       check=True, capture_output=True)
        os.umask(old)
        os.chmod(f"{d}/tls/tls.crt", 0o644)
        self.cert = f"{d}/tls/tls.crt"
        self.admin("init", "--ecds-file", f"{d}/bundle/guard.json", "--wasm", self.args.wasm,
                   "--bundle-key-out", f"{d}/bundle.key")
        self.admin("tenant", "add", "acme", "--name", "Acme Inc", "--region", "eu")
        self.admin("tenant", "add", "globex", "--name", "Globex Corp", "--region", "us")
        self.admin("provider", "set", "openai", "--path-prefix", "/v1/", "--header", "authorization",
                   "--format", "Bearer {secret}", stdin="sk-console-upstream-secret")
        for t in ("acme", "globex"):
            self.admin("ip", "allow", "--tenant", t, "127.0.0.1/32", "::1/128")
        self.admin("admin", "add", "root", "--role", "platform")
        self.admin("admin", "add", "ann", "--role", "tenant", "--tenant", "acme")
        self.root_token = self.admin("admin", "token", "create", "root")["token"]
        self.ann_token = self.admin("admin", "token", "create", "ann")["token"]
        self.globex_key_id = self.admin("key", "create", "--tenant", "globex", "--name", "globex-key")["key_id"]
        # root turns 2FA on for the store (from then on every change needs a code).
        self.root_secret = self.admin("--as", "root", "2fa", "enroll")["secret"]
        self.root_steps = {int(time.time() // 30)}
        self.admin("--as", "root", "--otp", totp(self.root_secret), "2fa", "verify")
        self.admin("--as", "root", "--otp", self.admin_code(), "publish")

        self.listen, admin_port, eu, us = free_port(), free_port(), free_port(), free_port()
        text = open(TEMPLATE).read()
        for k, v in {"LISTEN_PORT": self.listen, "ADMIN_PORT": admin_port, "UPSTREAM_EU_PORT": eu,
                     "UPSTREAM_US_PORT": us, "BUNDLE_DIR": f"{d}/bundle", "WASM_PATH": self.args.wasm,
                     "ACCESS_LOG": self.access_log, "TLS_CERT": self.cert, "TLS_KEY": f"{d}/tls/tls.key"}.items():
            text = text.replace("{{" + k + "}}", str(v))
        with open(f"{d}/envoy.yaml", "w") as f:
            f.write(text)
        for port in (eu, us):
            self.spawn([self.args.echo, "--port", str(port)], f"echo-{port}.log")
        env = dict(self.env, TOKENHUB_BUNDLE_KEY=open(f"{d}/bundle.key").read().strip())
        self.spawn([self.args.envoy, "-c", f"{d}/envoy.yaml", "--concurrency", "1", "--disable-hot-restart",
                    "--file-flush-interval-msec", "500", "--log-level", "warn"], "envoy.log", env)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{admin_port}/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise Failed(f"Envoy did not become ready; see {d}/envoy.log")
        log(f"Envoy ready on https://127.0.0.1:{self.listen}")
        serve = subprocess.Popen([self.args.admin, "serve", "--listen", "127.0.0.1:0", "--access-log", self.access_log],
                                 env=self.env, stdout=subprocess.PIPE, stderr=open(f"{d}/serve.log", "w"), text=True)
        self.procs.append(serve)
        line = serve.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            raise Failed(f"serve did not say where it listens: {line!r}")
        self.console = f"http://localhost:{m.group(1)}"
        log(f"console on {self.console}/console/")

    def admin_code(self):
        return fresh_totp(self.root_secret, self.root_steps)

    def spawn(self, argv, logname, env=None):
        p = subprocess.Popen(argv, env=env or self.env, stdout=open(os.path.join(self.dir, logname), "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)

    def call_gateway(self, key):
        """One request through Envoy with `key`: the status."""
        r = requests.post(f"https://127.0.0.1:{self.listen}/v1/chat/completions", data="{}",
                          headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
                          verify=self.cert, timeout=10)
        return r.status_code

    def until_gateway(self, key, want, what):
        start = time.time()
        deadline = start + WAIT
        status = None
        while time.time() < deadline:
            status = self.call_gateway(key)
            if status == want:
                check(True, f"{what} (Envoy answered {want}, {time.time() - start:.1f}s after the page returned)")
                return
            time.sleep(0.25)
        raise Failed(f"{what}: Envoy still answers {status}, wanted {want} within {WAIT:.0f}s")

    def stop(self, keep):
        stop_processes(self.procs)
        if keep:
            log(f"files kept in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class Browser:
    def __init__(self, rig, shots):
        opts = webdriver.ChromeOptions()
        opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = ChromeService(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
        self.d = webdriver.Chrome(service=service, options=opts)
        self.d.set_page_load_timeout(30)
        self.rig = rig
        self.shots = shots

    def go(self, path):
        self.d.get(self.rig.console + path)

    def el(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def text(self):
        return self.d.find_element(By.TAG_NAME, "body").text

    def fill(self, form_action, fields, submit=True, which=""):
        form = self.el(f'form[method="post"][action="{form_action}"]{which}')
        for name, value in fields.items():
            inp = form.find_element(By.CSS_SELECTOR, f'[name="{name}"]')
            if inp.tag_name == "select":
                inp.find_element(By.CSS_SELECTOR, f'option[value="{value}"]').click()
            else:
                inp.clear()
                inp.send_keys(value)
        if submit:
            self.submit(form.find_element(By.CSS_SELECTOR, 'button[type="submit"]'), form)

    def submit(self, button, old):
        """Clicks and waits for the next page (the old one's element goes stale)."""
        button.click()

        def gone(_):
            try:
                old.is_enabled()
                return False
            except WebDriverException:  # stale, or "does not belong to the document"
                return True

        WebDriverWait(self.d, 20).until(gone)
        WebDriverWait(self.d, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")

    def shot(self, name):
        if self.shots:
            self.d.save_screenshot(os.path.join(self.shots, f"{name}.png"))

    def session(self):
        """A requests session carrying this browser's cookie (for forged requests)."""
        s = requests.Session()
        for c in self.d.get_cookies():
            s.cookies.set(c["name"], c["value"])
        return s

    def unlabelled(self):
        """Form controls a screen reader could not name (no enclosing label)."""
        return self.d.execute_script(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
            ".filter(e => !e.closest('label') && !e.getAttribute('aria-label')).map(e => e.name)")

    def csp_violations(self):
        return [e["message"] for e in self.d.get_log("browser") if "Content Security Policy" in e["message"]]

    def quit(self):
        self.d.quit()


def run(args):
    rig = Rig(args)
    ok = False
    b = None
    try:
        rig.start()
        b = Browser(rig, args.screenshots)
        console = rig.console

        # --- sign-in without 2FA, then enrolment from the QR page ---
        b.go("/console/")
        check("/console/login" in b.d.current_url, "an anonymous visit lands on the sign-in page")
        b.shot("sign-in")
        b.fill("/console/login", {"token": "tha_wrong"})
        check("invalid or revoked admin token" in b.text(), "a wrong token is refused")
        b.fill("/console/login", {"token": rig.ann_token})
        check(b.d.current_url.endswith("/console/2fa"), "ann (no 2FA yet) is sent to the 2FA page")
        cookie = next(c for c in b.d.get_cookies() if c["name"] == "__Host-tokenhub-console")
        check(cookie["secure"] and cookie["httpOnly"] and cookie.get("sameSite") == "Strict",
              "the session cookie is __Host-, Secure, HttpOnly, SameSite=Strict")
        b.fill("/console/2fa/enroll", {})
        qr = b.el("svg.qr")
        check(qr.get_attribute("aria-label") and len(qr.find_element(By.TAG_NAME, "path").get_attribute("d")) > 1000,
              "the enrolment page shows the QR code (server-drawn SVG)")
        shown_secret = b.el("#totp-secret").text.strip()
        check(re.fullmatch(r"[A-Z2-7]{16,}", shown_secret) is not None, "the secret is shown beside the QR code")
        uri = decode_qr(qr, os.path.join(rig.dir, "qr.png"))
        parsed = urllib.parse.urlparse(uri)
        query = urllib.parse.parse_qs(parsed.query)
        secret = query.get("secret", [""])[0]
        check(parsed.scheme == "otpauth" and parsed.netloc == "totp" and urllib.parse.unquote(parsed.path).endswith(":ann"),
              "the QR code (decoded by zbarimg from a screenshot) is ann's otpauth://totp URI")
        check(secret == shown_secret, "the QR code's secret is the one shown beside it")
        b.shot("2fa-enrol")
        ann_steps = set()
        # The authenticator app's view: the code comes from the decoded QR.
        b.fill("/console/2fa/verify", {"code": fresh_totp(secret, ann_steps)})
        codes = [li.text.strip() for li in b.d.find_elements(By.CSS_SELECTOR, "#recovery-codes li")]
        check(len(codes) == 10 and "shown only now" in b.text(), "verify turns 2FA on and shows 10 recovery codes once")
        b.shot("recovery-codes")
        s = b.session()
        dl = s.get(console + "/console/2fa/recovery-codes.txt")
        check(dl.status_code == 200 and all(c in dl.text for c in codes)
              and "attachment" in dl.headers.get("content-disposition", ""),
              "the recovery codes download as a text file")
        check(s.get(console + "/console/2fa/recovery-codes.txt").status_code == 404, "... and only once")
        rc = iter(codes)

        # --- a change without the second factor is refused ---
        b.go("/console/keys")
        b.fill("/console/keys", {"tenant": "acme", "name": "no-code"})
        check("2FA code is required" in b.text(), "creating a key without a 2FA code is refused")

        # --- create, use through Envoy, rotate ---
        b.go("/console/keys")
        b.fill("/console/keys", {"tenant": "acme", "name": "ci-key", "code": next(rc)})
        key = b.el("#new-key").text.strip()
        check("only time the key is shown" in b.text() and b.el('button[data-copy="new-key"]').is_displayed(),
              "the new key is shown once, with a warning and a copy button")
        b.shot("key-created")
        key_id = b.el("main a[href^='/console/keys/']").text.strip()
        rig.until_gateway(key, 200, "the new key works through Envoy")
        b.go(f"/console/keys/{key_id}")
        check(key not in b.d.page_source, "the key page never shows the key again")
        b.fill(f"/console/keys/{key_id}/rotate", {"grace": "0s", "code": next(rc)})
        new_key = b.el("#new-key").text.strip()
        check(new_key != key, "rotation shows a new key once")
        rig.until_gateway(key, 401, "the rotated-out secret is refused (grace 0s)")
        rig.until_gateway(new_key, 200, "the rotated key works")

        # --- IP allowlist: lock-out warning, Envoy refuses, then allows again ---
        b.go(f"/console/ip?key={key_id}")
        b.fill("/console/ip", {"cidrs": "10.0.0.0/33", "code": "000000"}, which=".stack")
        check("10.0.0.0/33" in b.text() and b.d.find_elements(By.CSS_SELECTOR, "#error"),
              "an invalid CIDR is refused with the reason")
        b.go(f"/console/ip?key={key_id}")
        b.fill("/console/ip", {"cidrs": "10.0.0.0/8", "code": next(rc)}, which=".stack")
        check("no address is in every enabled allowlist" in b.text(), "the CLI's lock-out warning is shown")
        rig.until_gateway(new_key, 403, "Envoy refuses the key from 127.0.0.1 (outside its allowlist)")
        b.go(f"/console/ip?key={key_id}")
        b.fill("/console/ip", {"cidrs": "127.0.0.1/32", "code": next(rc)}, which=".stack")
        b.go(f"/console/ip?key={key_id}")
        b.shot("ip-allowlist")
        b.d.find_element(By.XPATH, "//button[normalize-space()='Remove 10.0.0.0/8']/..//input[@name='code']") \
            .send_keys(next(rc))
        remove = b.d.find_element(By.XPATH, "//button[normalize-space()='Remove 10.0.0.0/8']")
        b.submit(remove, remove)
        check("cidrs=127.0.0.1/32" in b.text() or "127.0.0.1/32" in b.text(), "the allowlist is edited")
        rig.until_gateway(new_key, 200, "the key works again from 127.0.0.1")
        for _ in range(3):
            rig.call_gateway(new_key)

        # --- another tenant: not listed, not reachable, forged requests refused ---
        b.go("/console/keys")
        check(rig.globex_key_id not in b.d.page_source and "globex" not in b.text(),
              "ann's key list shows no globex key and no globex tenant")
        b.shot("keys")
        b.go(f"/console/keys/{rig.globex_key_id}")
        check("no key" in b.text(), "another tenant's key page answers 'no key', as for a missing one")
        s = b.session()
        csrf = b.el('input[name="csrf"]').get_attribute("value")
        host = urllib.parse.urlparse(console).netloc
        origin = {"Origin": console}
        r = s.post(f"{console}/console/keys/{rig.globex_key_id}/revoke", data={"csrf": csrf, "code": next(rc)},
                   headers=origin, allow_redirects=False)
        check(r.status_code == 404, f"a forged revoke of another tenant's key answers 404 ({r.status_code})")
        r = s.post(f"{console}/console/keys", data={"csrf": csrf, "tenant": "globex", "code": next(rc)},
                   headers=origin, allow_redirects=False)
        check(r.status_code == 403, f"a forged key creation in another tenant answers 403 ({r.status_code})")
        r = s.get(f"{console}/console/keys?tenant=globex", allow_redirects=False)
        check(r.status_code == 403, f"listing another tenant's keys answers 403 ({r.status_code})")
        r = s.post(f"{console}/console/keys/{key_id}/disable", data={"code": "000000"}, headers=origin,
                   allow_redirects=False)
        check(r.status_code == 403 and "CSRF" in r.text, "a post without the CSRF token is refused")
        r = s.post(f"{console}/console/keys/{key_id}/disable", data={"csrf": csrf, "code": "000000"},
                   headers={"Origin": "http://evil.example"}, allow_redirects=False)
        check(r.status_code == 403 and "Origin" in r.text, "a post from another Origin is refused")
        r = requests.get(f"{console}/console/keys", headers={"Host": f"evil.example:{host.split(':')[1]}"},
                         cookies=s.cookies, allow_redirects=False)
        check(r.status_code == 421, "a request naming another Host (DNS rebinding) is refused")
        shown = rig.admin("--as", "root", "key", "show", rig.globex_key_id)
        check(shown["status"] == "active", "the globex key is untouched")
        check(r.headers.get("content-security-policy", "").startswith("default-src 'self'"), "pages carry the CSP")

        # --- usage chart ---
        deadline = time.time() + WAIT
        while time.time() < deadline:
            b.go(f"/console/usage?key={key_id}&days=7")
            if b.d.find_elements(By.CSS_SELECTOR, "svg.chart rect"):
                break
            time.sleep(0.5)
        check(b.d.find_elements(By.CSS_SELECTOR, "svg.chart rect") and key_id in b.text(),
              "the usage page draws requests per day for the key")
        charts = [c.get_attribute("aria-label") for c in b.d.find_elements(By.CSS_SELECTOR, "svg.chart")]
        check(any(c.startswith("Requests per day for ") and c.endswith(key_id) for c in charts)
              and any(c.startswith("Tokens per day for ") and c.endswith(key_id) for c in charts),
              f"the usage page draws requests and tokens per day for the key: {charts}")
        headers = [th.text for th in b.d.find_elements(By.CSS_SELECTOR, "th")]
        check(all(h in headers for h in ("Day", "Input tokens", "Output tokens", "Cached tokens", "Cost (USD)")),
              f"the usage tables show tokens and cost per key and day: {headers}")
        check("ip_not_allowed: " in b.text(), "usage lists the key's denials by reason (ip_not_allowed)")
        b.shot("usage")

        # --- incident: revoke, then Envoy refuses ---
        b.go(f"/console/keys/{key_id}")
        b.shot("key-detail")
        b.fill(f"/console/keys/{key_id}/revoke", {"code": next(rc)})
        check(b.el("#bundle-version").text.strip().isdigit() and "key.create" in b.text()
              and "Gateways enforce it" in b.text(),
              "the incident page shows the published version, the key's audit trail and the enforcement time")
        b.shot("incident")
        rig.until_gateway(new_key, 401, "Envoy refuses the revoked key")

        # --- recovery codes regenerate ---
        b.go("/console/2fa")
        b.fill("/console/2fa/recovery-codes", {"code": next(rc)})
        fresh = [li.text.strip() for li in b.d.find_elements(By.CSS_SELECTOR, "#recovery-codes li")]
        check(len(fresh) == 10 and not set(fresh) & set(codes), "recovery codes are regenerated (old ones replaced)")

        # --- accessibility: every control labelled, the skip link first ---
        for path in ("/console/keys", f"/console/keys/{key_id}", f"/console/ip?key={key_id}", "/console/usage",
                     "/console/audit", "/console/2fa"):
            b.go(path)
            missing = b.unlabelled()
            check(not missing, f"every form control of {path.split('?')[0]} has a label" + (f" (not: {missing})" if missing else ""))
        b.el("body").send_keys(Keys.TAB)
        check(b.d.switch_to.active_element.get_attribute("class") == "skip",
              "keyboard: the first Tab reaches the 'Skip to content' link")

        # --- audit log ---
        b.go("/console/audit?actor=ann")
        page = b.text()
        check("Audit log intact" in page, "the audit page shows `audit verify`: intact")
        for action in ("console.sign-in", "2fa.enroll", "2fa.verify", "key.create", "key.rotate", "ip.allow",
                       "ip.deny", "incident.revoke", "2fa.recovery-codes"):
            check(action in page, f"the audit log shows {action}")
        check("auth_failed" in page, "the audit log shows the refused change without 2FA")
        b.shot("audit")
        check(not b.csp_violations(), "no Content-Security-Policy violation on any page")

        # --- sign out; a platform admin signs in with TOTP and sees both tenants ---
        b.submit(b.el('form[action="/console/logout"] button'), b.el('form[action="/console/logout"]'))
        check("/console/login" in b.d.current_url, "sign-out ends the session")
        check(s.get(f"{console}/console/keys", allow_redirects=False).status_code == 303,
              "the old session cookie no longer works")
        b.fill("/console/login", {"token": rig.root_token, "code": "123456" if totp(rig.root_secret) != "123456"
                                  else "654321"})
        check("/console/login" in b.d.current_url and b.d.find_elements(By.CSS_SELECTOR, "#error"),
              "a wrong 2FA code at sign-in is refused")
        b.fill("/console/login", {"token": rig.root_token, "code": rig.admin_code()})
        check(rig.globex_key_id in b.d.page_source and key_id in b.d.page_source,
              "the platform admin (token + TOTP) sees both tenants' keys")
        ok = True
    except Failed as e:
        log(f"FAILED: {e}")
        if b is not None:
            log(f"at {b.d.current_url}: {b.text()[:1500]}")
    finally:
        if b is not None:
            b.quit()
        rig.stop(keep=not ok)
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--admin", default=os.path.join(ROOT, "target/release/tokenhub-admin"))
    p.add_argument("--echo", default=os.path.join(ROOT, "target/release/echo-upstream"))
    p.add_argument("--wasm", default=os.path.join(ROOT, "target/wasm32-wasip1/release/tokenhub_guard.wasm"))
    p.add_argument("--envoy", required=True)
    p.add_argument("--screenshots", help="save PNG screenshots of the main pages here")
    args = p.parse_args()
    for f in (args.admin, args.echo, args.wasm, args.envoy):
        if not os.path.exists(f):
            sys.exit(f"console-e2e: {f} is missing (make admin wasm; cargo build -p tokenhub-integration --bin echo-upstream)")
    args.wasm = os.path.abspath(args.wasm)
    if args.screenshots:
        os.makedirs(args.screenshots, exist_ok=True)
    sys.exit(run(args))


if __name__ == "__main__":
    main()
