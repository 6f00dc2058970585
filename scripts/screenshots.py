#!/usr/bin/env python3
"""Screenshots for the README through WebDriver over plain HTTP; see docs/screenshots.md.

Usage: screenshots.py chat BASE_URL OUT_DIR | screenshots.py dash BASE_URL OUT_DIR SECONDS
(chromedriver listening on 127.0.0.1:9515)."""
import json, sys, time, base64, urllib.request, tempfile
WD = "http://127.0.0.1:9515"
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(WD + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["value"]
class S:
    def __init__(self, h=893):
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--user-data-dir=" + tempfile.mkdtemp(), "--window-size=1200,%d" % h]
        v = call("POST", "/session", {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}})
        self.id = v["sessionId"]
    def go(self, url): call("POST", f"/session/{self.id}/url", {"url": url})
    def el(self, css):
        v = call("POST", f"/session/{self.id}/element", {"using": "css selector", "value": css})
        return list(v.values())[0]
    def type(self, css, text):
        e = self.el(css); call("POST", f"/session/{self.id}/element/{e}/clear", {})
        call("POST", f"/session/{self.id}/element/{e}/value", {"text": text})
    def click(self, css): call("POST", f"/session/{self.id}/element/{self.el(css)}/click", {})
    def js(self, script): return call("POST", f"/session/{self.id}/execute/sync", {"script": script, "args": []})
    def shot(self, path):
        open(path, "wb").write(base64.b64decode(call("GET", f"/session/{self.id}/screenshot")))
    def quit(self): call("DELETE", f"/session/{self.id}")
def send(s, text):
    s.type("#message-input", text); s.click("#send-btn"); time.sleep(0.6)
def signin(s, base, name):
    s.go(base + "/"); time.sleep(1)
    s.type("#name-input", name); s.click("#connect-btn"); time.sleep(1)
    s.type("#room-input", "lobby"); s.click("#join-btn"); time.sleep(1)
mode = sys.argv[1]; base = sys.argv[2]; out = sys.argv[3]
if mode == "chat":
    bob = S(); dana = S()
    try:
        signin(bob, base, "bob"); signin(dana, base, "dana")
        send(dana, "Hi all, just catching up. Anything I should know before standup?")
        send(bob, "Welcome back dana! The release notes draft is in the wiki.")
        time.sleep(1)
        print(dana.js("return [window.innerWidth, window.innerHeight]"))
        dana.shot(out + "/screenshot-room.png")
        dana.click('#members li[data-user="bob"] button.member-pm'); time.sleep(0.5)
        send(dana, "Hey bob, got a minute to look at my PR before the cut?")
        send(bob, "/msg dana Sure, send me the link.")
        send(dana, "It's #412, the reconnect backoff fix.")
        send(bob, "/msg dana Looks good, approving now.")
        send(dana, "Thanks!")
        time.sleep(1)
        dana.shot(out + "/screenshot-private.png")
    finally:
        bob.quit(); dana.quit()
else:
    d = S()
    try:
        d.go(base + "/dashboard"); time.sleep(float(sys.argv[4]))
        d.shot(out + "/screenshot-dashboard.png")
    finally:
        d.quit()
