"""edgeguard-web.service in a real systemd: a booted Debian container (tests/system/nspawn.py).

EdgeGuard is installed with deploy/install.sh, aiohttp added to its venv (what the ``web``
extra brings), the web user created and the password set as docs/web.md says, and both
units started. A client inside the container then signs in, uploads a photo with a face
through the page, waits for it and downloads the redacted copy, exactly as a browser on the
Pi would; and the web process's own mount table shows its sandbox: the root read-only, the
inbox the only writable place, failed/ hidden, /tmp and /var/tmp empty and read-only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.daemon import REPO, skip_or_fail
from PIL import Image

sys.path.insert(0, str(REPO / "tests" / "system"))
import nspawn

pytestmark = [pytest.mark.system, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
VENV = "/opt/edgeguard/venv"
INBOX = "/run/edgeguard/inbox"
FAILED = "/run/edgeguard/failed"
OUTBOX = "/var/lib/edgeguard/outbox"
FACE = (175, 60, 260, 165)  # the astronaut's face, x1 y1 x2 y2
WEB_REQUIREMENTS = ("aiohttp>=3.9",)

# Run inside the container by the venv's python (numpy and Pillow are there): a browser's
# requests, made with urllib against 127.0.0.1:8080.
CLIENT = r'''
import http.cookiejar, json, re, sys, time, urllib.parse, urllib.request, uuid
base = "http://127.0.0.1:8080"
jar = http.cookiejar.CookieJar()
op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
token = re.search(r'name="csrf" value="([^"]+)"', op.open(base + "/login").read().decode())[1]
form = urllib.parse.urlencode({"csrf": token, "password": sys.argv[1]}).encode()
op.open(urllib.request.Request(base + "/login", data=form))
page = op.open(base + "/").read().decode()
csrf = re.search(r'name="csrf-token" content="([^"]+)"', page)[1]
out = {}
for name in sys.argv[3:]:
    data = open(sys.argv[2] + "/" + name, "rb").read()
    b = uuid.uuid4().hex
    body = (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f'Content-Type: application/octet-stream\r\n\r\n').encode() + data + \
           f"\r\n--{b}--\r\n".encode()
    req = urllib.request.Request(base + "/api/upload", data=body, headers={
        "Content-Type": "multipart/form-data; boundary=" + b, "X-CSRF-Token": csrf})
    try:
        res = json.loads(op.open(req).read())["results"][0]
    except urllib.error.HTTPError as e:
        res = json.loads(e.read())["results"][0]
    out[name] = res
deadline = time.time() + 60
while time.time() < deadline:
    ups = {u["id"]: u for u in json.loads(op.open(base + "/api/uploads").read())["uploads"]}
    for name, res in out.items():
        if res["id"] in ups:
            out[name] = ups[res["id"]]
    if all(r["status"] == "done" or (r["status"] in ("failed", "refused") and r["reason"])
           for r in out.values()):
        break
    time.sleep(0.3)
for name, res in out.items():
    if res["status"] == "done":
        data = op.open(base + "/results/" + urllib.parse.quote(res["output"])).read()
        open("/root/downloaded-" + name, "wb").write(data)
status = json.loads(op.open(base + "/api/status").read())
print(json.dumps({"uploads": out, "status": status}))
'''


def _web_wheels() -> Path:
    """aiohttp and its dependencies as wheels for the container (same CPython 3.11, x86-64
    glibc as this host), fetched once with pip and cached beside the other wheels."""
    key = nspawn._key(WEB_REQUIREMENTS, sys.version_info[:2])
    wh = nspawn.cache_dir() / f"web-wheels-{key}"
    if (wh / ".complete").is_file():
        return wh
    wh.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                           "-d", str(wh), *WEB_REQUIREMENTS], capture_output=True, text=True,
                          timeout=600, check=False)
    if proc.returncode != 0:
        skip_or_fail(f"cannot download the web wheels (network?): {proc.stderr[-500:]}")
    (wh / ".complete").touch()
    return wh


@pytest.fixture(scope="module")
def box(astronaut_rgb: np.ndarray) -> Iterator[nspawn.Container]:
    reason = nspawn.missing_prerequisites()
    if reason:
        skip_or_fail(reason)
    try:
        base = nspawn.base_tarball()
        wheels = nspawn.wheelhouse(base)
    except nspawn.HarnessError as exc:
        skip_or_fail(f"cannot build the Debian tree or its wheels (network?): {exc}")
        raise
    web_wheels = _web_wheels()
    with nspawn.fresh_tree(base) as tree:
        src = nspawn.copy_source(tree)
        with nspawn.Container(tree, binds=[(wheels, "/wheelhouse"),
                                           (web_wheels, "/webwheels")]) as c:
            c.run(f"{src}/deploy/install.sh", "--wheelhouse", "/wheelhouse", "--no-start",
                  timeout=600)
            c.run(f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links",
                  "/webwheels", *WEB_REQUIREMENTS, timeout=300)
            # docs/web.md, step by step.
            c.run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                  "--groups", "edgeguard-drop,edgeguard", "edgeguard-web")
            c.run(f"{VENV}/bin/edgeguard", "web", "--set-password", input=PASSWORD + "\n")
            c.run("install", "-m", "0644", f"{src}/systemd/edgeguard-web.service",
                  "/etc/systemd/system/")
            c.systemctl("daemon-reload")
            c.systemctl("start", "edgeguard")
            c.systemctl("start", "edgeguard-web")
            c.run("mkdir", "-p", "/root/photos")
            buf = _jpeg(astronaut_rgb)
            c.write_bytes("/root/photos/face.jpg", buf)
            bmp = _encode(astronaut_rgb, "BMP")
            c.write_bytes("/root/photos/cut.bmp", bmp[: len(bmp) // 2])
            c.write_bytes("/root/photos/notes.jpg", b"not a photo\n")
            c.write_bytes("/root/client.py", CLIENT.encode())
            yield c


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


def _jpeg(rgb: np.ndarray) -> bytes:
    return _encode(rgb, "JPEG")


def _main_pid(c: nspawn.Container) -> int:
    return int(c.show("edgeguard-web", "MainPID")["MainPID"])


def test_web_service_runs_in_its_sandbox(box: nspawn.Container) -> None:
    c = box
    props = c.show("edgeguard-web", "ActiveState", "SubState", "User", "NRestarts")
    assert (props["ActiveState"], props["SubState"], props["User"]) == (
        "active", "running", "edgeguard-web"), c.journal("edgeguard-web")
    assert props["NRestarts"] == "0"
    pid = _main_pid(c)
    mounts = {}
    for line in c.read_bytes(f"/proc/{pid}/mountinfo").decode().splitlines():
        fields = line.split()
        sep = fields.index("-")
        mounts[fields[4]] = (fields[5].split(","), fields[sep + 1])
    assert "ro" in mounts["/"][0]
    assert "rw" in mounts[INBOX][0]
    assert FAILED in mounts  # InaccessiblePaths=: an empty, unreadable node over it
    for tmp in ("/tmp", "/var/tmp"):
        assert mounts[tmp][1] == "tmpfs" and "ro" in mounts[tmp][0], tmp
    writable = sorted(m for m, (opts, _) in mounts.items() if "rw" in opts and m.startswith(
        ("/etc", "/var", "/opt", "/usr", "/home", "/root", "/run/edgeguard")))
    assert writable == [INBOX], writable
    status = c.run("cat", f"/proc/{pid}/status").stdout
    groups = next(line for line in status.splitlines() if line.startswith("Groups:"))
    gids = {c.run("getent", "group", g).stdout.split(":")[2]
            for g in ("edgeguard-drop", "edgeguard")}
    assert gids <= set(groups.split()[1:]), groups
    # The page answers on localhost only.
    listening = c.run("ss", "-Hltn", check=False).stdout or c.run(
        "cat", "/proc/net/tcp").stdout
    assert "127.0.0.1:8080" in listening or "0100007F:1F90" in listening, listening


def test_upload_through_the_service_is_redacted(box: nspawn.Container,
                                               astronaut_rgb: np.ndarray) -> None:
    c = box
    r = c.run(f"{VENV}/bin/python", "/root/client.py", PASSWORD, "/root/photos", "face.jpg",
              "cut.bmp", "notes.jpg", timeout=120)
    result = json.loads(r.stdout)
    ups = result["uploads"]
    assert ups["face.jpg"]["status"] == "done", (ups, c.journal("edgeguard-web"))
    assert ups["notes.jpg"] == {**ups["notes.jpg"], "status": "refused",
                                "reason": "not an image (unrecognised format)"}
    assert ups["cut.bmp"]["status"] == "failed"
    assert ups["cut.bmp"]["reason"].startswith("truncated or corrupt BMP")
    import io

    out = np.asarray(Image.open(io.BytesIO(c.read_bytes("/root/downloaded-face.jpg")))
                     .convert("RGB"))
    x1, y1, x2, y2 = FACE
    diff = np.abs(out[y1:y2, x1:x2].astype(float) - astronaut_rgb[y1:y2, x1:x2]).mean()
    assert diff > 20.0
    assert result["status"]["daemon"]["running"] is True
    assert result["status"]["daemon"]["counts"]["processed"] >= 1
    # The daemon kept its own failure; in the web process's mount namespace failed/ is an
    # empty, inaccessible node, even to root.
    assert c.run("ls", "-A", FAILED).stdout.split() == ["cut.bmp", "cut.bmp.reason"]
    r = c.run("nsenter", "-t", str(_main_pid(c)), "-m", "/bin/ls", "-A", FAILED, check=False)
    assert r.stdout.split() == []
