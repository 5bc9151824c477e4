"""The web page (`edgeguard web`, issue 9).

Fast tier: the password hash, attempt limits, sessions, upload checks (the daemon's own
reasons), names, the outbox reader, and the aiohttp application in-process against a
real tmpfs inbox (sign-in, CSRF, Host, limits, streaming, results, status). The unit file
is checked with systemd-analyze.

System tier (``-m system``): the real `edgeguard web` process and the real daemon
(`python -m edgeguard run`, real models) on a /dev/shm inbox, driven by Debian's headless
Chromium through Playwright: sign in, upload a photo with a real face and EXIF GPS by the
file picker and by drag and drop, watch it, download it and check the face is redacted and
the metadata gone; refusals with their messages; and no raw byte outside tmpfs.
``EDGEGUARD_WEB_SCREENSHOT=docs/web.png pytest -m system -k screenshot`` refreshes the README
screenshot (the page with the default limits, after a few uploads).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import logging
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.daemon import PATIENCE, REPO, require_models, running, shm_dir, wait_for
from PIL import Image

from edgeguard import codec, config, mounts
from edgeguard.errors import ConfigError, InputError, StartupError

aiohttp = pytest.importorskip("aiohttp", reason="the web extra is not installed "
                                                "(pip install -e '.[web]')")
from aiohttp import FormData  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from edgeguard.state import STATE_FILE  # noqa: E402
from edgeguard.web import app as webapp  # noqa: E402
from edgeguard.web import auth, results, server, uploads  # noqa: E402
from edgeguard.web import context as webctx  # noqa: E402

PASSWORD = "correct horse battery staple"
UNIT = REPO / "systemd" / "edgeguard-web.service"
DEPLOY_CONFIG = REPO / "deploy" / "edgeguard.toml"
ASTRONAUT_FACE = (175, 60, 260, 165)  # x1, y1, x2, y2 (tests/test_bench.py)
MB = 1024 * 1024


# -- images -------------------------------------------------------------------------------


def encoded(rgb: np.ndarray, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg_with_gps(rgb: np.ndarray, marker: str) -> bytes:
    """A JPEG with EXIF: GPS position, a serial number (``marker``) and a thumbnail."""
    import piexif

    thumb = encoded(np.ascontiguousarray(rgb[::8, ::8]), "JPEG")
    exif = piexif.dump({
        "0th": {piexif.ImageIFD.Make: b"EdgeGuardTest", piexif.ImageIFD.ImageDescription:
                marker.encode()},
        "Exif": {piexif.ExifIFD.BodySerialNumber: marker.encode()},
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N",
                piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (2400, 100)),
                piexif.GPSIFD.GPSLongitudeRef: b"E",
                piexif.GPSIFD.GPSLongitude: ((2, 1), (17, 1), (4000, 100))},
        "1st": {}, "thumbnail": thumb,
    })
    return encoded(rgb, "JPEG", quality=92, exif=exif)


def multipart_bomb(size: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + bytes(size - 8)


# -- password, limits, sessions ---------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_password_is_stored_hashed_and_verified() -> None:
    line = auth.hash_secret(PASSWORD)
    assert line.startswith("scrypt$16384$8$1$")
    assert PASSWORD not in line and base64.b64encode(PASSWORD.encode()).decode() not in line
    assert auth.verify_secret(PASSWORD, line)
    assert not auth.verify_secret(PASSWORD + "x", line)
    assert not auth.verify_secret("", line)
    assert auth.hash_secret(PASSWORD) != line  # a fresh salt each time


@pytest.mark.parametrize("line", [
    "", "plain-text-password", "scrypt$16384$8$1$c2FsdA==",
    "scrypt$16384$8$1$!!!$AAAA", "pbkdf2$1$2$3$4$5",
    "scrypt$1048576$32$1$" + "A" * 24 + "$" + "A" * 44,  # 4 GB per attempt: refused
    "scrypt$1000$8$1$" + "A" * 24 + "$" + "A" * 44,  # N not a power of two
])
def test_malformed_password_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        auth.StoredSecret.parse(line)


def test_password_file_change_takes_effect_and_ends_sessions(tmp_path: Path) -> None:
    pw = auth.PasswordFile(tmp_path / "web-password")
    with pytest.raises(StartupError, match="--set-password"):
        pw.fingerprint()
    pw.set(PASSWORD)
    assert stat.S_IMODE((tmp_path / "web-password").stat().st_mode) == 0o640
    ok, first = pw.verify(PASSWORD)
    assert ok
    sessions = auth.Sessions(3600.0)
    token, _ = sessions.create(first)
    assert sessions.get(token, pw.fingerprint()) is not None
    time.sleep(0.01)  # a distinct mtime
    pw.set("another long password")
    assert pw.verify(PASSWORD)[0] is False
    assert pw.verify("another long password")[0] is True
    assert sessions.get(token, pw.fingerprint()) is None  # signed out by the change
    with pytest.raises(ConfigError, match="at least 8"):
        pw.set("short")


def test_cli_sets_a_password_or_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from edgeguard.cli import main

    cfg = tmp_path / "web.toml"
    pw = tmp_path / "secret" / "web-password"
    cfg.write_text(f'[web]\npassword_file = "{pw}"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["web", "--config", str(cfg), "--set-password"]) == 2
    assert "at least 8 characters" in capsys.readouterr().err and not pw.exists()
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["web", "--config", str(cfg), "--set-password"]) == 0
    assert auth.PasswordFile(pw).verify(PASSWORD)[0]
    capsys.readouterr()
    assert main(["web", "--config", str(cfg), "--generate-token"]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) == 32 and token not in pw.read_text()
    assert auth.PasswordFile(pw).verify(token)[0] and not auth.PasswordFile(pw).verify(
        PASSWORD)[0]


def test_failed_attempts_are_limited_per_client() -> None:
    clock = FakeClock()
    limiter = auth.RateLimiter(3, 60.0, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") == 0
        limiter.failure("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(60.0)
    assert limiter.retry_after("10.0.0.2") == 0  # another client is not affected
    clock.now += 30
    assert limiter.retry_after("10.0.0.1") == pytest.approx(30.0)
    clock.now += 30
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.failure("10.0.0.1")
    limiter.success("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 0


def test_sessions_expire_and_are_bounded() -> None:
    clock = FakeClock()
    sessions = auth.Sessions(100.0, max_sessions=3, clock=clock)
    tokens = [sessions.create("fp")[0] for _ in range(4)]
    assert sessions.get(tokens[0], "fp") is None  # the oldest of four went
    assert sessions.get(tokens[3], "fp") is not None
    assert sessions.get(tokens[3], "other-password") is None
    assert sessions.get("forged", "fp") is None
    clock.now += 100
    assert sessions.get(tokens[2], "fp") is None


# -- upload checks: the daemon's reasons ------------------------------------------------


def _daemon_reason(data: bytes, max_pixels: int) -> str:
    with pytest.raises(InputError) as exc:
        codec.decode_bytes(data, name="x", max_pixels=max_pixels)
    return str(exc.value)


def _web_reason(tmp: Path, data: bytes, max_pixels: int) -> str:
    path = tmp / "upload.bin"
    path.write_bytes(data)
    with path.open("rb") as fh, pytest.raises(InputError) as exc:
        uploads.check_image(fh, max_pixels=max_pixels)
    return str(exc.value)


def _bad_uploads(rgb: np.ndarray) -> dict[str, tuple[bytes, int]]:
    jpg = encoded(rgb, "JPEG")
    png = encoded(rgb, "PNG")
    frames = [Image.fromarray(rgb[:64, :64]), Image.fromarray(rgb[64:128, :64])]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    big = 10**9
    return {
        "text": (b"hello, this is not a photo\n", big),
        "empty": (b"", big),
        "pdf": (b"%PDF-1.7\n" + bytes(100), big),
        "heic": (b"\x00\x00\x00\x18ftypheic" + bytes(100), big),
        "svg": (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", big),
        "truncated-jpeg": (jpg[: len(jpg) // 2], big),
        "truncated-png": (png[: len(png) // 2], big),
        "corrupt-webp": (encoded(rgb, "WEBP")[:200], big),
        "too-many-pixels": (jpg, 512 * 512 - 1),
        "animated-gif": (gif.getvalue(), big),
    }


@pytest.mark.parametrize("case", ["text", "empty", "pdf", "heic", "svg", "truncated-jpeg",
                                  "truncated-png", "corrupt-webp", "too-many-pixels",
                                  "animated-gif"])
def test_upload_check_gives_the_daemons_reason(case: str, astronaut_rgb: np.ndarray,
                                               tmp_path: Path) -> None:
    data, max_pixels = _bad_uploads(astronaut_rgb)[case]
    assert _web_reason(tmp_path, data, max_pixels) == _daemon_reason(data, max_pixels)


@pytest.mark.parametrize("fmt,kw", [("JPEG", {}), ("PNG", {}), ("WEBP", {}), ("BMP", {}),
                                    ("TIFF", {}), ("GIF", {})])
def test_upload_check_accepts_what_the_daemon_decodes(fmt: str, kw: dict[str, Any],
                                                      astronaut_rgb: np.ndarray,
                                                      tmp_path: Path) -> None:
    data = encoded(astronaut_rgb, fmt, **kw)
    codec.decode_bytes(data, name="x", max_pixels=10**8)  # the daemon takes it
    path = tmp_path / "ok"
    path.write_bytes(data)
    with path.open("rb") as fh:
        assert uploads.check_image(fh, max_pixels=10**8) == (fmt.lower(), 512, 512)


@pytest.mark.parametrize("given,fmt,expected", [
    ("holiday.jpg", "jpeg", "holiday.jpg"),
    ("IMG_0001.JPEG", "jpeg", "IMG_0001.JPEG"),
    ("../../etc/passwd", "png", "passwd.png"),
    ("C:\\Users\\me\\face.png", "png", "face.png"),
    (".bashrc", "jpeg", "bashrc.jpg"),
    ("...", "jpeg", "upload.jpg"),
    ("", "webp", "upload.webp"),
    (None, "gif", "upload.gif"),
    ("photo.jpg", "png", "photo.jpg.png"),  # the content decides the suffix
    ("half.part", "jpeg", "half.part.jpg"),
    ("backup~", "jpeg", "backup_.jpg"),
    ("a\x00b\nc.jpg", "jpeg", "a_b_c.jpg"),
    ("Été à Nice.jpg", "jpeg", "Été à Nice.jpg"),
    ("x" * 300 + ".jpg", "jpeg", "x" * 120 + ".jpg"),
])
def test_upload_names_are_plain_and_taken_by_the_daemon(given: str | None, fmt: str,
                                                        expected: str) -> None:
    from edgeguard.sources.inbox import is_ignored_name

    name = uploads.safe_name(given, fmt)
    assert name == expected
    assert not is_ignored_name(name) and "/" not in name


def test_place_never_collides_with_the_inbox_or_the_outbox(tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    (inbox / "a.jpg").write_bytes(b"someone else's")
    (outbox / "a-1.jpg").write_bytes(b"an earlier output")
    box = uploads.Inbox(inbox, outbox, "same")
    fd, part = box.new_part()
    os.close(fd)
    assert part.name.startswith(".edgeguard-") and part.name.endswith(".part")
    placed = box.place(part, "a.jpg", "jpeg")
    assert placed.name == "a-2.jpg" and placed.output == "a-2.jpg"
    assert (inbox / "a.jpg").read_bytes() == b"someone else's"
    assert not part.exists()
    # The expected output follows the configured format (GIF becomes PNG for "same").
    assert uploads.Inbox(inbox, outbox, "same").expected_output("x.gif", "gif") == "x.png"
    assert uploads.Inbox(inbox, outbox, "webp").expected_output("x.jpg", "jpeg") == "x.webp"


def test_tracker_follows_an_upload_to_done_or_failed(tmp_path: Path) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    clock = FakeClock()
    tracker = uploads.UploadTracker(inbox, outbox, clock=clock, wall=lambda: 500.0)
    good = tracker.queued("me.jpg", uploads.Placed("me.jpg", "me.jpg", "jpeg"))
    bad = tracker.queued("odd.bmp", uploads.Placed("odd.bmp", "odd.bmp", "bmp"))
    silent = tracker.queued("x.jpg", uploads.Placed("x.jpg", "x.jpg", "jpeg"))
    for name in ("me.jpg", "odd.bmp", "x.jpg"):
        (inbox / name).write_bytes(b"raw")
    tracker.refresh(None)
    assert [u.status for u in (good, bad, silent)] == [uploads.UploadStatus.QUEUED] * 3
    assert tracker.waiting() == 3
    # The daemon: publish, then delete the input; or move it to failed/.
    (outbox / "me.jpg").write_bytes(b"redacted")
    for name in ("me.jpg", "odd.bmp", "x.jpg"):
        (inbox / name).unlink()
    # Two failures close together: the last error names only the second; the list both.
    state = {"last_error": "y.jpg: not an image", "last_error_at": 501.5,
             "recent_failures": [
                 {"name": "odd.bmp", "reason": "an older failure", "at": 400.0},
                 {"name": "odd.bmp", "reason": "truncated or corrupt BMP", "at": 501.0},
                 {"name": "y.jpg", "reason": "not an image", "at": 501.5}]}
    tracker.refresh(state)
    assert good.status is uploads.UploadStatus.DONE and good.as_dict()["output"] == "me.jpg"
    assert bad.status is uploads.UploadStatus.FAILED and bad.reason == "truncated or corrupt BMP"
    # Gone from the inbox without an output is not failed yet: the daemon claims arrivals
    # into its private spool at once, and this one may be in progress there.
    assert silent.status is uploads.UploadStatus.QUEUED
    state |= {"updated_at": 499.0, "queued": 0, "in_flight": 0}
    tracker.refresh(state)
    assert silent.status is uploads.UploadStatus.QUEUED  # an idle state from before the upload
    state |= {"updated_at": 502.0, "queued": 1, "in_flight": 1}
    tracker.refresh(state)
    assert silent.status is uploads.UploadStatus.QUEUED  # the daemon is busy: maybe with it
    state |= {"queued": 0, "in_flight": 0}
    tracker.refresh(state)
    assert silent.status is uploads.UploadStatus.FAILED and silent.reason is None  # still asking
    clock.now += tracker.reason_wait_s - 1
    tracker.refresh(state)
    assert silent.reason is None
    clock.now += 1
    tracker.refresh(state)
    assert silent.reason == uploads.GENERIC_FAILURE
    assert tracker.waiting() == 0


# -- the outbox reader ------------------------------------------------------------------


def test_results_are_opened_only_inside_the_outbox(tmp_path: Path,
                                                   astronaut_rgb: np.ndarray) -> None:
    outbox = tmp_path / "outbox"
    (outbox / "sub").mkdir(parents=True)
    jpg = encoded(astronaut_rgb, "JPEG")
    (outbox / "a.jpg").write_bytes(jpg)
    (outbox / "sub" / "b.png").write_bytes(encoded(astronaut_rgb, "PNG"))
    (outbox / "a.jpg.json").write_text("{}")
    (outbox / ".edgeguard-x.tmp").write_bytes(jpg)
    secret = tmp_path / "inbox-raw.jpg"
    secret.write_bytes(jpg)
    (outbox / "link.jpg").symlink_to(secret)
    (outbox / "linkdir").symlink_to(tmp_path)
    opened = results.open_result(outbox, "sub/b.png")
    os.close(opened.fd)
    assert (opened.content_type, opened.name) == ("image/png", "b.png")
    for bad in ("../inbox-raw.jpg", "sub/../a.jpg", "/etc/passwd", "", "sub", "a.jpg.json",
                ".edgeguard-x.tmp", "link.jpg", "linkdir/inbox-raw.jpg", "a.jpg\0",
                "sub//b.png", "sub\\b.png", "missing.jpg", "./a.jpg"):
        with pytest.raises(results.NotFound):
            results.open_result(outbox, bad)
    listed = [r.path for r in results.list_results(outbox, 10)]
    assert sorted(listed) == ["a.jpg", "sub/b.png"]
    os.utime(outbox / "a.jpg", (1, 1))
    assert [r.path for r in results.list_results(outbox, 1)] == ["sub/b.png"]


# -- configuration and start-up checks --------------------------------------------------


def test_listen_address_needs_allow_lan_beyond_loopback() -> None:
    cfg = config.Config()
    assert cfg.web.listen == "127.0.0.1" and cfg.web.allow_lan is False
    assert server.check_listen(cfg) == "127.0.0.1"
    for addr in ("0.0.0.0", "192.168.1.20", "::"):
        lan = config.override(cfg, "web", listen=addr)
        with pytest.raises(ConfigError, match="allow_lan"):
            server.check_listen(lan)
        assert server.check_listen(config.override(lan, "web", allow_lan=True)) == addr
    assert server.check_listen(config.override(cfg, "web", listen="::1")) == "::1"
    with pytest.raises(ConfigError, match="not an IP address"):
        server.check_listen(config.override(cfg, "web", listen="raspberrypi.local"))
    with pytest.raises(ConfigError, match=r"web\.port"):
        config.from_dict({"web": {"port": 70000}})
    with pytest.raises(ConfigError, match=r"web\.max_upload_mb"):
        config.from_dict({"web": {"max_upload_mb": 0}})


def test_web_refuses_an_inbox_on_disk(tmp_path: Path) -> None:
    if mounts.is_tmpfs(tmp_path):
        pytest.skip("the pytest temporary folder is on tmpfs here")
    with pytest.raises(StartupError, match="not on tmpfs"):
        server.check_inbox(tmp_path)
    with pytest.raises(StartupError, match="does not exist"):
        server.check_inbox(tmp_path / "absent")


def test_web_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    inbox = shm_dir()
    try:
        cfg = config.from_dict({"daemon": {"inbox": str(inbox), "outbox": str(tmp_path)},
                                "web": {"password_file": str(tmp_path / "none")}})
        with pytest.raises(StartupError, match="--set-password"):
            server.settings_for(cfg)
    finally:
        shutil.rmtree(inbox, ignore_errors=True)


# -- the application, in-process ----------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[webctx.Settings]:
    """Settings for an app on a real tmpfs inbox; the outbox and runtime beside it."""
    shm = shm_dir()
    (shm / "inbox").mkdir()
    (shm / "outbox").mkdir()
    pw = tmp_path / "web-password"
    auth.PasswordFile(pw).set(PASSWORD)
    yield webctx.Settings(
        inbox=shm / "inbox", outbox=shm / "outbox", runtime=shm, password_file=pw,
        output_format="same", max_pixels=64_000_000, max_upload_bytes=1 * MB, max_files=3,
        session_s=3600.0, login_failures=3, login_window_s=300.0, allow_lan=False)
    shutil.rmtree(shm, ignore_errors=True)


Scenario = Callable[[TestClient[Any, Any]], Awaitable[None]]


def serve_in_process(settings: webctx.Settings, scenario: Scenario) -> None:
    async def main() -> None:
        app = webapp.create_app(settings)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await scenario(client)

    asyncio.run(main())


def _form_token(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


async def sign_in(client: TestClient[Any, Any], password: str = PASSWORD) -> str:
    """Sign in; returns the page's CSRF token."""
    r = await client.get("/login")
    r = await client.post("/login", data={"csrf": _form_token(await r.text()),
                                          "password": password}, allow_redirects=False)
    assert r.status == 303, await r.text()
    page = await (await client.get("/")).text()
    m = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert m, page
    return m.group(1)


def upload_form(*files: tuple[str, bytes]) -> FormData:
    form = FormData()
    for name, data in files:
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
    return form


def inbox_entries(settings: webctx.Settings) -> list[str]:
    return sorted(os.listdir(settings.inbox))


def test_sign_in_refuses_a_wrong_password_and_sets_a_strict_cookie(
        site: webctx.Settings) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        r = await client.get("/", allow_redirects=False)
        assert (r.status, r.headers["Location"]) == (303, "/login")
        for path in ("/api/status", "/api/uploads", "/api/results", "/results/a.jpg"):
            assert (await client.get(path)).status == 401, path
        r = await client.get("/login")
        login_cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in login_cookie and "SameSite=Strict" in login_cookie
        r = await client.post("/login", data={"csrf": _form_token(await r.text()),
                                              "password": "not the password"})
        assert r.status == 401
        assert "Wrong password or token." in await r.text()
        r = await client.post("/login", data={"csrf": _form_token(await r.text()),
                                              "password": PASSWORD}, allow_redirects=False)
        assert r.status == 303
        cookie = r.headers["Set-Cookie"]
        assert cookie.startswith(webctx.SESSION_COOKIE + "=")
        for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
            assert flag in cookie, cookie
        assert (await client.get("/api/status")).status == 200
        for header in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"):
            assert header in r.headers

    serve_in_process(site, scenario)


def test_failed_sign_ins_are_rate_limited(site: webctx.Settings) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        page = await (await client.get("/login")).text()
        for _ in range(site.login_failures):
            r = await client.post("/login", data={"csrf": _form_token(page),
                                                  "password": "guess"})
            assert r.status == 401
            page = await r.text()
        r = await client.post("/login", data={"csrf": _form_token(page), "password": PASSWORD})
        assert r.status == 429  # even the right password waits now
        assert "Too many failed sign-ins" in await r.text()
        assert int(r.headers["Retry-After"]) > 0

    serve_in_process(site, scenario)


async def _login_client(server: TestServer) -> tuple[TestClient[Any, Any], str]:
    """A browser of its own (own cookies) at the sign-in form: (client, form token)."""
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    page = await (await client.get("/login")).text()
    return client, _form_token(page)


def test_parallel_wrong_sign_ins_are_counted_before_the_hash(site: webctx.Settings) -> None:
    """30 wrong sign-ins at once from one address: only login_failures of them reach the
    password hash; the others are refused without it."""
    checked: list[str] = []

    async def main() -> None:
        app = webapp.create_app(site)
        passwords = app[webctx.STATE].passwords
        verify = passwords.verify

        def counting(secret: str) -> tuple[bool, str]:
            checked.append(secret)
            return verify(secret)

        passwords.verify = counting  # type: ignore[method-assign]
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            browsers = [await _login_client(server) for _ in range(30)]
            replies = await asyncio.gather(*(
                c.post("/login", data={"csrf": token, "password": f"guess {i}"})
                for i, (c, token) in enumerate(browsers)))
            codes = sorted(r.status for r in replies)
            for c, _ in browsers:
                await c.close()
        finally:
            await server.close()
        assert codes == [401] * site.login_failures + [429] * (30 - site.login_failures)

    asyncio.run(main())
    assert len(checked) == site.login_failures


def test_others_guesses_do_not_lock_the_owners_browser_out(site: webctx.Settings) -> None:
    """Behind an ssh tunnel everyone shares one address: a browser that has signed in
    before has attempts of its own (its device cookie), so someone else's wrong guesses
    from that address do not keep the owner out; the guesser is still limited."""

    async def main() -> None:
        server = TestServer(webapp.create_app(site), host="127.0.0.1")
        await server.start_server()
        try:
            owner, token = await _login_client(server)
            r = await owner.post("/login", data={"csrf": token, "password": PASSWORD},
                                 allow_redirects=False)
            assert r.status == 303
            device = r.cookies[webctx.DEVICE_COOKIE]
            assert device["httponly"] and device["samesite"] == "Strict"
            # Someone else, same address: guesses until refused.
            other, token = await _login_client(server)
            for _ in range(site.login_failures):
                r = await other.post("/login", data={"csrf": token, "password": "guess"})
                assert r.status == 401
                token = _form_token(await r.text())
            r = await other.post("/login", data={"csrf": token, "password": PASSWORD})
            assert r.status == 429
            # A made-up device cookie does not buy the guesser new attempts.
            other.session.cookie_jar.update_cookies(
                {webctx.DEVICE_COOKIE: "madeup.0123456789abcdef0123456789abcdef"})
            r = await other.post("/login", data={"csrf": _form_token(await r.text()),
                                                 "password": "guess"})
            assert r.status == 429
            # The owner's browser (its session over, its device cookie kept) signs in at once.
            owner.session.cookie_jar.clear(lambda c: c.key == webctx.SESSION_COOKIE)
            page = await (await owner.get("/login")).text()
            r = await owner.post("/login", data={"csrf": _form_token(page),
                                                 "password": PASSWORD}, allow_redirects=False)
            assert r.status == 303, await r.text()
            for c in (owner, other):
                await c.close()
        finally:
            await server.close()

    asyncio.run(main())


def test_sign_in_needs_its_form_token(site: webctx.Settings) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        await client.get("/login")
        r = await client.post("/login", data={"password": PASSWORD}, allow_redirects=False)
        assert r.status == 403
        r = await client.post("/login", data={"csrf": "forged", "password": PASSWORD},
                              allow_redirects=False)
        assert r.status == 403
        assert webctx.SESSION_COOKIE not in r.cookies

    serve_in_process(site, scenario)


def test_state_changing_requests_need_the_csrf_token(site: webctx.Settings,
                                                     astronaut_rgb: np.ndarray) -> None:
    jpg = encoded(astronaut_rgb, "JPEG")

    async def scenario(client: TestClient[Any, Any]) -> None:
        csrf = await sign_in(client)
        r = await client.post("/api/upload", data=upload_form(("a.jpg", jpg)))
        assert r.status == 403 and "CSRF" in (await r.json())["error"]
        r = await client.post("/api/upload", data=upload_form(("a.jpg", jpg)),
                              headers={webctx.CSRF_HEADER: "forged"})
        assert r.status == 403
        r = await client.post("/api/upload", data=upload_form(("a.jpg", jpg)),
                              headers={webctx.CSRF_HEADER: csrf,
                                       "Origin": "http://evil.example"})
        assert r.status == 403 and "Origin" in (await r.json())["error"]
        r = await client.post("/api/upload", data=upload_form(("a.jpg", jpg)),
                              headers={webctx.CSRF_HEADER: csrf, "Sec-Fetch-Site": "cross-site"})
        assert r.status == 403
        assert inbox_entries(site) == []
        r = await client.post("/logout", data={"csrf": "forged"}, allow_redirects=False)
        assert r.status == 403
        assert (await client.get("/api/status")).status == 200  # still signed in
        r = await client.post("/api/upload", data=upload_form(("a.jpg", jpg)),
                              headers={webctx.CSRF_HEADER: csrf})
        assert r.status == 200
        r = await client.post("/logout", data={"csrf": csrf}, allow_redirects=False)
        assert r.status == 303
        assert (await client.get("/api/status")).status == 401

    serve_in_process(site, scenario)


def test_the_page_answers_to_localhost_only_unless_lan_is_allowed(
        site: webctx.Settings) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        assert (await client.get("/login")).status == 200
        assert (await client.get("/login", headers={"Host": "localhost:8080"})).status == 200
        assert (await client.get("/login", headers={"Host": "[::1]:8080"})).status == 200
        r = await client.get("/login", headers={"Host": "attacker.example"})
        assert r.status == 421

    serve_in_process(site, scenario)
    lan = dataclasses.replace(site, allow_lan=True)

    async def lan_scenario(client: TestClient[Any, Any]) -> None:
        r = await client.get("/login", headers={"Host": "edgeguard.lan:8080"})
        assert r.status == 200

    serve_in_process(lan, lan_scenario)


def test_uploads_stream_into_the_inbox_or_are_refused_with_a_reason(
        site: webctx.Settings, astronaut_rgb: np.ndarray) -> None:
    jpg = encoded(astronaut_rgb, "JPEG")
    png = encoded(astronaut_rgb, "PNG")

    async def post(client: TestClient[Any, Any], csrf: str,
                   *files: tuple[str, bytes]) -> tuple[int, list[dict[str, Any]]]:
        r = await client.post("/api/upload", data=upload_form(*files),
                              headers={webctx.CSRF_HEADER: csrf})
        return r.status, (await r.json())["results"]

    async def scenario(client: TestClient[Any, Any]) -> None:
        csrf = await sign_in(client)
        code, res = await post(client, csrf, ("me.jpg", jpg))
        assert code == 200 and res[0]["status"] == "queued" and res[0]["name"] == "me.jpg"
        assert (site.inbox / "me.jpg").read_bytes() == jpg
        code, res = await post(client, csrf, ("notes.jpg", b"just some text\n"))
        assert (code, res[0]["reason"]) == (415, "not an image (unrecognised format)")
        code, res = await post(client, csrf, ("big.png", multipart_bomb(MB + 1000)))
        assert code == 413
        assert res[0]["reason"] == "too large: 1.0 MB; the limit is 1 MB per photo"
        code, res = await post(client, csrf, ("half.png", png[: len(png) // 2]))
        assert (code, res[0]["reason"]) == (
            415, "truncated or corrupt PNG (image file is truncated)")
        assert inbox_entries(site) == ["me.jpg"]  # refusals never reach the inbox
        # Count limits: three per upload, and three of the page's waiting at once.
        code, res = await post(client, csrf, *[(f"p{i}.jpg", jpg) for i in range(4)])
        assert code == 200
        assert [r["status"] for r in res] == ["queued", "queued", "refused", "refused"]
        assert res[2]["reason"].startswith("3 photos from this page are still being "
                                           "uploaded or waiting")
        assert res[3]["reason"] == "too many photos in one upload: at most 3"
        assert inbox_entries(site) == ["me.jpg", "p0.jpg", "p1.jpg"]
        r = await client.get("/api/uploads")
        listed = {u["file"]: u["status"] for u in (await r.json())["uploads"]}
        assert listed["me.jpg"] == "queued" and listed["notes.jpg"] == "refused"
        # Malformed bodies and other content types are refused.
        r = await client.post("/api/upload", data=b"x" * 10,
                              headers={webctx.CSRF_HEADER: csrf, "Content-Type":
                                       "multipart/form-data; boundary=b"})
        assert r.status == 400
        r = await client.post("/api/upload", data=b"{}", headers={
            webctx.CSRF_HEADER: csrf, "Content-Type": "application/json"})
        assert r.status == 415

    serve_in_process(site, scenario)


def _multipart_head(name: str, boundary: str = "b") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode()


MULTIPART = "multipart/form-data; boundary=b"


def test_uploads_in_progress_count_toward_max_files(site: webctx.Settings,
                                                     astronaut_rgb: np.ndarray) -> None:
    """20 uploads at once, each still sending its photo, with max_files = 3: only three are
    taken; memory and connections do not grow with the number of uploads."""
    jpg = encoded(astronaut_rgb, "JPEG")

    async def scenario(client: TestClient[Any, Any]) -> None:
        csrf = await sign_in(client)
        release = asyncio.Event()

        async def body(i: int) -> Any:
            yield _multipart_head(f"p{i}.jpg") + jpg[:1000]
            await release.wait()
            yield jpg[1000:] + b"\r\n--b--\r\n"

        posts = [asyncio.ensure_future(client.post(
            "/api/upload", data=body(i), headers={webctx.CSRF_HEADER: csrf,
                                                  "Content-Type": MULTIPART}))
                 for i in range(20)]
        state = client.server.app[webctx.STATE]
        await asyncio.wait_for(_until(lambda: getattr(state, "receiving", site.max_files)
                                      == site.max_files), 30 * PATIENCE)
        await asyncio.sleep(0.5)  # let the other 17 reach their check meanwhile
        release.set()
        replies = [await p for p in posts]
        results = [(await r.json())["results"][0]["status"] for r in replies]
        assert results.count("queued") == site.max_files, results
        assert results.count("refused") == 20 - site.max_files
        assert len(inbox_entries(site)) == site.max_files

    serve_in_process(site, scenario)


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.02)


def test_a_chunked_upload_has_a_total_cap(site: webctx.Settings) -> None:
    """No Content-Length to check up front: the body is counted as it arrives, and refused
    parts count too (today any number of them would be read and thrown away)."""
    budget = site.max_files * (site.max_upload_bytes + webctx.PART_OVERHEAD)
    sent = [0]

    async def body() -> Any:
        for i in range(40):  # 40 parts of 0.5 MB: 20 MB against a budget of ~3.2 MB
            chunk = _multipart_head(f"x{i}.png") + multipart_bomb(MB // 2) + b"\r\n"
            sent[0] += len(chunk)
            yield chunk
        yield b"--b--\r\n"

    async def scenario(client: TestClient[Any, Any]) -> None:
        csrf = await sign_in(client)
        try:
            r = await client.post("/api/upload", data=body(), headers={
                webctx.CSRF_HEADER: csrf, "Content-Type": MULTIPART})
            assert r.status == 413, await r.text()
        except aiohttp.ClientError:
            pass  # the server answered and closed while the client was still sending
        assert sent[0] < 20 * MB  # the server stopped reading
        assert [n for n in os.listdir(site.inbox) if n.startswith(".edgeguard-")] == []
        assert budget < 20 * MB

    serve_in_process(site, scenario)


def test_a_slow_upload_is_cut_off(site: webctx.Settings) -> None:
    """One byte every 0.1 s never stalls for READ_IDLE_S; the average pace cuts it off."""
    slow = dataclasses.replace(site, upload_grace_s=1.0, min_upload_rate=1024)

    async def body() -> Any:
        yield _multipart_head("slow.jpg") + b"\xff\xd8"
        for _ in range(100_000):
            await asyncio.sleep(0.1)
            yield b"\x00"

    async def scenario(client: TestClient[Any, Any]) -> None:
        csrf = await sign_in(client)
        r = await asyncio.wait_for(client.post("/api/upload", data=body(), headers={
            webctx.CSRF_HEADER: csrf, "Content-Type": MULTIPART}), 60 * PATIENCE)
        assert r.status == 408
        assert "too slow" in (await r.json())["error"]
        assert [n for n in os.listdir(slow.inbox) if n.startswith(".edgeguard-")] == []

    serve_in_process(slow, scenario)


def test_an_over_long_part_header_is_a_clean_400(site: webctx.Settings,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp's 8 KB header-line limit: a clean refusal, and the file name (hidden names
    on) appears neither in the log nor in a traceback."""
    hidden = dataclasses.replace(site, hide_filenames=True)
    name = "SECRET-NAME-" + "x" * 9000 + ".jpg"

    async def scenario(client: TestClient[Any, Any]) -> None:
        csrf = await sign_in(client)
        with caplog.at_level(logging.DEBUG):
            r = await client.post("/api/upload", data=_multipart_head(name) + b"data\r\n--b--\r\n",
                                  headers={webctx.CSRF_HEADER: csrf, "Content-Type": MULTIPART})
            assert r.status == 400
            text = await r.text()
        assert "SECRET-NAME" not in text
        assert "SECRET-NAME" not in caplog.text and "Traceback" not in caplog.text, caplog.text

    serve_in_process(hidden, scenario)


def test_behind_a_trusted_tls_proxy_cookies_are_secure_and_https_origins_match(
        site: webctx.Settings) -> None:
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "edgeguard.example",
               "Origin": "https://edgeguard.example"}

    async def attempt(client: TestClient[Any, Any], headers: dict[str, str],
                      password: str = PASSWORD) -> aiohttp.ClientResponse:
        r = await client.get("/login", headers=headers)
        page = await r.text()
        # The test talks plain http to the app (the proxy's side), where a client keeps
        # Secure cookies to itself: hand the form cookie back by hand.
        form_cookie = r.cookies[webctx.LOGIN_COOKIE]
        assert bool(form_cookie["secure"]) == (headers.get("X-Forwarded-Proto") == "https")
        return await client.post(
            "/login", data={"csrf": _form_token(page), "password": password},
            headers=headers | {"Cookie": f"{webctx.LOGIN_COOKIE}={form_cookie.value}"},
            allow_redirects=False)

    async def untrusted(client: TestClient[Any, Any]) -> None:
        r = await client.get("/login", headers=proxied)
        assert not r.cookies[webctx.LOGIN_COOKIE]["secure"]  # the headers are not believed
        r = await client.post("/login", data={"csrf": _form_token(await r.text()),
                                              "password": PASSWORD}, headers=proxied)
        assert r.status == 403  # the https Origin does not match plain http

    async def trusted(client: TestClient[Any, Any]) -> None:
        # Each browser's address comes from X-Forwarded-For: one's guesses leave another be.
        for _ in range(site.login_failures):
            r = await attempt(client, proxied | {"X-Forwarded-For": "10.0.0.7"}, "guess")
            assert r.status == 401
        r = await attempt(client, proxied | {"X-Forwarded-For": "10.0.0.7"}, "guess")
        assert r.status == 429
        r = await attempt(client, proxied | {"X-Forwarded-For": "10.0.0.8"})
        assert r.status == 303, await r.text()
        session = [h for h in r.headers.getall("Set-Cookie")
                   if h.startswith(webctx.SESSION_COOKIE + "=")]
        assert session and "Secure" in session[0], session

    serve_in_process(site, untrusted)
    serve_in_process(dataclasses.replace(site, trusted_proxy=True), trusted)


def test_forms_are_never_spooled_to_temporary_files(site: webctx.Settings, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp's Request.post() would spool file fields to tempfile (disk): never called."""
    import tempfile

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    big = multipart_bomb(3 * MB)

    async def scenario(client: TestClient[Any, Any]) -> None:
        r = await client.post("/login", data=upload_form(("x.png", big)))
        assert r.status == 415
        csrf = await sign_in(client)
        r = await client.post("/logout", data=upload_form(("x.png", big)))
        assert r.status in (403, 415)
        r = await client.post("/api/upload", data=upload_form(("x.png", big)),
                              headers={webctx.CSRF_HEADER: csrf})
        assert r.status == 413
        assert list(spool.iterdir()) == []
        assert [n for n in os.listdir(site.inbox) if n.startswith(".edgeguard-")] == []

    serve_in_process(site, scenario)


def test_results_are_served_from_the_outbox_only(site: webctx.Settings,
                                                 astronaut_rgb: np.ndarray) -> None:
    jpg = encoded(astronaut_rgb, "JPEG")
    (site.outbox / "out.jpg").write_bytes(jpg)
    (site.inbox / "raw.jpg").write_bytes(jpg)
    failed = site.runtime / "failed"
    failed.mkdir()
    (failed / "bad.jpg").write_bytes(jpg)
    (site.outbox / "escape.jpg").symlink_to(site.inbox / "raw.jpg")

    async def scenario(client: TestClient[Any, Any]) -> None:
        await sign_in(client)
        r = await client.get("/results/out.jpg")
        assert r.status == 200 and await r.read() == jpg
        assert r.headers["Content-Type"] == "image/jpeg"
        assert r.headers["Content-Disposition"].startswith("inline")
        r = await client.get("/results/out.jpg?download=1")
        assert r.headers["Content-Disposition"].startswith('attachment; filename="out.jpg"')
        for path in ("raw.jpg", "../inbox/raw.jpg", "..%2Finbox%2Fraw.jpg",
                     "%2e%2e/failed/bad.jpg", "escape.jpg", "../failed/bad.jpg",
                     "/dev/shm", "%2Fetc%2Fpasswd"):
            r = await client.get("/results/" + path)
            assert r.status == 404, path
        for path in ("/inbox/raw.jpg", "/static/../inbox/raw.jpg", "/failed/bad.jpg",
                     "/static/%2e%2e/app.py"):
            assert (await client.get(path)).status in (403, 404), path
        assert (await client.get("/static/app.js")).status == 200
        listed = (await (await client.get("/api/results")).json())["results"]
        assert [r["path"] for r in listed] == ["out.jpg"]

    serve_in_process(site, scenario)


def test_status_panel_reports_the_daemons_state_file(site: webctx.Settings) -> None:
    import json

    snap = {"pid": os.getpid(), "state": "running", "processed": 7, "failed": 2,
            "refused": 1, "faces": 9, "queued": 1, "in_flight": 1, "retries": 0,
            "latency_ms": {"p50": 120.0, "p95": 340.5, "count": 7},
            "last_error": "odd.bmp: truncated or corrupt BMP", "last_error_at": time.time(),
            "camera": {"state": "running", "camera": "picamera2:0", "fps": 14.8,
                       "frames": 1000, "secret": "not passed on"},
            "videos": [{"name": "clip.mp4", "frames_done": 120, "frames_total": 450,
                        "fps": 8.1, "eta_s": 40.7, "path": "/run/edgeguard/inbox.spool/x"}],
            "inbox": "/run/edgeguard/inbox", "config": "/etc/edgeguard/edgeguard.toml"}
    (site.runtime / STATE_FILE).write_text(json.dumps(snap))

    async def scenario(client: TestClient[Any, Any]) -> None:
        csrf = await sign_in(client)
        await client.post("/api/upload", data=upload_form(("n.txt", b"text")),
                          headers={webctx.CSRF_HEADER: csrf})
        data = await (await client.get("/api/status")).json()
        d = data["daemon"]
        assert d["running"] is True
        assert d["counts"]["processed"] == 7 and d["counts"]["faces"] == 9
        assert d["latency_ms"] == {"p50": 120.0, "p95": 340.5, "count": 7}
        assert d["last_error"] == "odd.bmp: truncated or corrupt BMP"
        assert d["camera"] == {"state": "running", "camera": "picamera2:0", "fps": 14.8,
                               "frames": 1000}
        # a video in progress: its frames done of total, fps and ETA (nothing else)
        assert d["videos"] == [{"name": "clip.mp4", "frames_done": 120, "frames_total": 450,
                                "fps": 8.1, "eta_s": 40.7}]
        assert "inbox" not in d and "config" not in d
        assert data["failures"][0]["reason"] == "not an image (unrecognised format)"
        (site.runtime / STATE_FILE).write_text(json.dumps(snap | {"state": "stopped"}))
        d = (await (await client.get("/api/status")).json())["daemon"]
        assert d["running"] is False

    serve_in_process(site, scenario)


# -- the unit file --------------------------------------------------------------------------


def _unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def test_web_unit_is_sandboxed_with_only_the_inbox_writable() -> None:
    s = _unit_settings()
    cfg = config.load(DEPLOY_CONFIG)
    assert s["Service.User"] == ["edgeguard-web"]
    assert s["Service.SupplementaryGroups"] == ["edgeguard-drop edgeguard"]
    assert s["Service.ExecStart"] == ["/opt/edgeguard/venv/bin/edgeguard web --config "
                                      "/etc/edgeguard/edgeguard.toml"]
    assert s["Service.ProtectSystem"] == ["strict"]
    assert s["Service.ReadWritePaths"] == [cfg.daemon.inbox]
    assert s["Service.InaccessiblePaths"] == ["-" + cfg.daemon.failed + " -"
                                              + cfg.daemon.inbox + ".spool"]
    assert s["Service.TemporaryFileSystem"] == ["/tmp:ro /var/tmp:ro"]
    assert s["Service.IPAddressDeny"] == ["any"]
    assert s["Service.IPAddressAllow"] == ["localhost"]
    assert s["Service.LimitCORE"] == ["0"]
    assert s["Service.Type"] == ["notify"]
    for key in ("NoNewPrivileges", "PrivateDevices", "ProtectHome", "PrivateUsers",
                "MemoryDenyWriteExecute"):
        assert s[f"Service.{key}"] == ["yes"], key
    assert s["Service.CapabilityBoundingSet"] == [""]
    assert "Service.PrivateNetwork" not in s  # it serves HTTP, on localhost by default
    assert cfg.web.listen == "127.0.0.1" and cfg.web.allow_lan is False


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="", LC_ALL="C.UTF-8")
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    stub = tmp_path / "bin" / "edgeguard"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/edgeguard/venv/bin/edgeguard", str(stub)))
    return unit


def test_web_unit_verifies_cleanly_and_scores_low_exposure(checkable_unit: Path) -> None:
    r = _analyze("verify", "--man=no", "--generators=no", str(checkable_unit))
    assert (r.returncode, r.stdout + r.stderr) == (0, "")
    r = _analyze("security", "--offline=true", "--threshold=15", "--no-pager",
                 str(checkable_unit))
    assert r.returncode == 0, r.stdout
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m and float(m.group(1)) <= 1.5, r.stdout
    weaker = checkable_unit.read_text().replace("IPAddressDeny=any\n", "").replace(
        "ProtectSystem=strict\n", "")
    checkable_unit.write_text(weaker)
    r = _analyze("security", "--offline=true", "--no-pager", str(checkable_unit))
    m2 = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m2 and float(m2.group(1)) > float(m.group(1))


# -- system: the real processes and a real browser ----------------------------------------


def _face_redacted(raw: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """Mean absolute difference inside the face box and in a far corner."""
    x1, y1, x2, y2 = ASTRONAUT_FACE
    face = np.abs(raw[y1:y2, x1:x2].astype(float) - out[y1:y2, x1:x2].astype(float)).mean()
    corner = np.abs(raw[400:, :100].astype(float) - out[400:, :100].astype(float)).mean()
    return float(face), float(corner)


def _files_with(marker: bytes, roots: list[Path], since: float) -> list[str]:
    """Files under ``roots`` changed since ``since`` whose bytes contain ``marker``."""
    hits = []
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if d not in (".git", ".venv", ".venv-tflite", ".cache")]
            for name in names:
                path = os.path.join(folder, name)
                try:
                    st = os.lstat(path)
                    if (not stat.S_ISREG(st.st_mode) or st.st_mtime < since
                            or st.st_size > 64 * MB):
                        continue
                    with open(path, "rb") as fh:
                        if marker in fh.read():
                            hits.append(path)
                except OSError:
                    continue
    return hits


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The real daemon and the real web process on one /dev/shm tree, and a browser."""
    require_models()
    from web import harness

    harness.require_browser()
    started = time.time()
    work = shm_dir()
    scratch = tmp_path_factory.mktemp("web-scratch")  # on disk: must stay empty
    cfg = work / "edgeguard.toml"
    cfg.write_text(f"""
[daemon]
inbox = "{work / 'inbox'}"
outbox = "{work / 'outbox'}"
failed = "{work / 'failed'}"
stable_s = 0.3
[web]
password_file = "{work / 'web-password'}"
max_upload_mb = 1
max_files = 5
login_failures = 20
""")
    harness.set_password(cfg)
    browser_tmp = work / "browser-tmp"
    browser_tmp.mkdir()
    old_tmp = os.environ.get("TMPDIR")
    # The browser and Playwright's driver keep their profile and blobs on tmpfs too: the
    # raw test photo must not land in /tmp through them and spoil the check below.
    os.environ["TMPDIR"] = str(browser_tmp)
    try:
        with running(["--config", str(cfg)], workdir=work) as daemon, \
                harness.web_process(cfg, workdir=work, scratch=scratch) as web, \
                harness.browser() as browser:
            watcher = harness.WritesWatcher(web.pid)
            yield {"work": work, "web": web, "daemon": daemon, "browser": browser,
                   "watcher": watcher, "scratch": scratch, "started": started,
                   "config": cfg}
            watcher.stop()
    finally:
        if old_tmp is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_tmp
        shutil.rmtree(work, ignore_errors=True)


def _page(app: dict[str, Any]) -> Any:
    context = app["browser"].new_context(viewport={"width": 1100, "height": 720},
                                         accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000 * PATIENCE)
    return page


def _sign_in(page: Any, url: str, password: str = PASSWORD) -> None:
    page.goto(url + "/")
    page.fill("#password", password)
    page.click("button[type=submit]")


def _stage(app: dict[str, Any], name: str, data: bytes) -> Path:
    """A user's file, kept on tmpfs (the browser reads it from there)."""
    folder = app["work"] / "desktop"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def _row(page: Any, name: str) -> Any:
    return page.locator("#uploads li.item", has=page.locator(".name", has_text=name))


@pytest.mark.system
def test_browser_signs_in_uploads_a_face_and_downloads_it_redacted(
        appliance: dict[str, Any], astronaut_rgb: np.ndarray) -> None:
    app = appliance
    url = app["web"].url
    page = _page(app)
    marker = "EGMARK" + os.urandom(8).hex()
    app["marker"] = marker.encode()
    raw = jpeg_with_gps(astronaut_rgb, marker)
    assert marker.encode() in raw
    photo = _stage(app, "astronaut portrait.jpg", raw)

    _sign_in(page, url, "wrong password")
    assert page.locator("#login-message").inner_text() == "Wrong password or token."
    assert page.locator("#drop").count() == 0
    _sign_in(page, url)
    page.wait_for_selector("#drop")
    page.wait_for_selector("#daemon-pill.ok")

    page.set_input_files("#picker", str(photo))
    row = _row(page, "astronaut portrait.jpg")
    row.locator(".state.done").wait_for(timeout=30_000 * PATIENCE)
    assert row.locator(".state").inner_text() == "redacted"
    page.wait_for_selector("#results figure img[alt='astronaut portrait.jpg']")
    wait_for(lambda: re.search(r"Processed\s+[1-9]", page.locator("#counts").inner_text())
             is not None, 10, "the status panel to count it")
    assert re.search(r"Faces redacted\s+[1-9]", page.locator("#counts").inner_text())

    with page.expect_download() as info:
        row.locator("a.download").click()
    download = info.value
    assert download.suggested_filename == "astronaut portrait.jpg"
    saved = app["work"] / "downloaded.jpg"
    download.save_as(saved)
    data = saved.read_bytes()
    assert data[:3] == b"\xff\xd8\xff"
    assert marker.encode() not in data and b"EdgeGuardTest" not in data
    with Image.open(saved) as img:
        assert not img.getexif() and "exif" not in img.info
        out = np.asarray(img.convert("RGB"))
    assert out.shape == astronaut_rgb.shape
    face, corner = _face_redacted(astronaut_rgb, out)
    assert face > 20.0 and corner < 6.0, (face, corner)
    page.context.close()


@pytest.mark.system
def test_browser_drag_and_drop_and_refusals(appliance: dict[str, Any],
                                            astronaut_rgb: np.ndarray) -> None:
    app = appliance
    work = app["work"]
    page = _page(app)
    _sign_in(page, app["web"].url)
    page.wait_for_selector("#drop")
    dropped = encoded(np.ascontiguousarray(astronaut_rgb[:, ::-1]), "PNG")
    page.evaluate("""([b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: "image/png"}));
        const zone = document.getElementById("drop");
        zone.dispatchEvent(new DragEvent("dragenter", {dataTransfer: dt, bubbles: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true,
                                                  cancelable: true}));
    }""", [base64.b64encode(dropped).decode(), "mirrored.png"])
    _row(page, "mirrored.png").locator(".state.done").wait_for(timeout=30_000 * PATIENCE)
    assert (work / "outbox" / "mirrored.png").exists()

    notes = _stage(app, "holiday.jpg", b"Dear diary, this is not a photo.\n")
    big = _stage(app, "huge.png", multipart_bomb(MB + MB // 2))
    page.set_input_files("#picker", [str(notes), str(big)])
    row = _row(page, "holiday.jpg")
    row.locator(".state.refused").wait_for()
    assert row.locator(".reason").inner_text() == _daemon_reason(notes.read_bytes(), 10**8)
    row = _row(page, "huge.png")
    row.locator(".state.refused").wait_for()
    assert row.locator(".reason").inner_text() == "too large: 1.5 MB; the limit is 1 MB per photo"

    # The server says the same when the page's own check is bypassed, and so does the
    # daemon's reason for a file only decoding can reject (a truncated BMP): the page
    # shows it from the daemon's state file.
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    r = page.request.post(app["web"].url + "/api/upload", headers={"X-CSRF-Token": token},
                          multipart={"file": {"name": "huge.png", "mimeType": "image/png",
                                              "buffer": big.read_bytes()}})
    assert r.status == 413
    assert r.json()["results"][0]["reason"] == "too large: 1.5 MB; the limit is 1 MB per photo"
    bmp = encoded(astronaut_rgb, "BMP")
    cut = _stage(app, "cut.bmp", bmp[: len(bmp) // 2])
    page.set_input_files("#picker", str(cut))
    row = _row(page, "cut.bmp")
    row.locator(".state.failed").wait_for(timeout=30_000 * PATIENCE)
    wait_for(lambda: "truncated" in row.locator(".reason").inner_text(), 10, "the reason")
    assert row.locator(".reason").inner_text() == _daemon_reason(cut.read_bytes(), 10**8)
    assert not (work / "outbox" / "cut.bmp").exists()
    failed = sorted(p.name for p in (work / "failed").iterdir())
    assert failed == ["cut.bmp", "cut.bmp.reason"]  # only the daemon's own failure
    page.wait_for_selector("#failures li .why")
    assert "not an image" in page.locator("#failures").inner_text()
    page.context.close()


@pytest.mark.system
def test_requests_without_the_csrf_token_are_refused(appliance: dict[str, Any],
                                                     astronaut_rgb: np.ndarray) -> None:
    app = appliance
    page = _page(app)
    _sign_in(page, app["web"].url)
    page.wait_for_selector("#drop")
    before = sorted(os.listdir(app["work"] / "inbox"))
    jpg = encoded(astronaut_rgb, "JPEG")
    r = page.request.post(app["web"].url + "/api/upload", multipart={
        "file": {"name": "sneaky.jpg", "mimeType": "image/jpeg", "buffer": jpg}})
    assert r.status == 403 and "CSRF" in r.json()["error"]
    r = page.request.post(app["web"].url + "/logout", form={"csrf": ""})
    assert r.status == 403
    assert sorted(os.listdir(app["work"] / "inbox")) == before
    assert not (app["work"] / "outbox" / "sneaky.jpg").exists()
    page.reload()
    assert page.locator("#drop").count() == 1  # still signed in
    page.context.close()


@pytest.mark.system
def test_no_raw_byte_outside_tmpfs(appliance: dict[str, Any],
                                   astronaut_rgb: np.ndarray) -> None:
    """Runs last: everything the web process wrote was in the tmpfs inbox."""
    app = appliance
    marker = app.get("marker")
    if marker is None:  # run alone: make an upload with a marker first
        test_browser_signs_in_uploads_a_face_and_downloads_it_redacted(app, astronaut_rgb)
        marker = app["marker"]
    written = app["watcher"].stop()
    inbox = str(app["work"] / "inbox") + "/"
    assert app["watcher"].samples > 100
    assert any(p.startswith(inbox + ".edgeguard-") for p in written), written
    outside = sorted(p for p in written if not p.startswith(inbox))
    assert outside == [], outside
    web = app["web"]
    assert list(web.cwd.iterdir()) == [] and list(web.tmpdir.iterdir()) == []
    roots = [Path("/tmp"), Path("/var/tmp"), REPO, app["scratch"]]
    assert _files_with(marker, roots, app["started"] - 1) == []
    # Only the daemon's own folders on tmpfs ever held it (failed/ had no copy: it worked).
    assert mounts.is_tmpfs(app["work"])


@pytest.mark.system
def test_readme_screenshot(appliance: dict[str, Any], astronaut_rgb: np.ndarray,
                           tmp_path: Path) -> None:
    """Not a check: docs/web.png, taken from a web process with the default limits."""
    shot = os.environ.get("EDGEGUARD_WEB_SCREENSHOT")
    if not shot:
        pytest.skip("set EDGEGUARD_WEB_SCREENSHOT=docs/web.png to take the README screenshot")
    from skimage import data
    from web import harness

    app = appliance
    defaults = tmp_path / "defaults.toml"
    defaults.write_text(app["config"].read_text().replace("max_upload_mb = 1\n", "")
                        .replace("max_files = 5\n", ""))
    with harness.web_process(defaults, workdir=app["work"], scratch=tmp_path / "s") as web:
        page = _page(app)
        _sign_in(page, web.url)
        page.wait_for_selector("#drop")
        files = [_stage(app, "team photo.jpg", encoded(astronaut_rgb, "JPEG")),
                 _stage(app, "launch.jpg", encoded(data.rocket(), "JPEG")),
                 _stage(app, "notes.txt", b"not a photo")]
        page.set_input_files("#picker", [str(f) for f in files])
        for name in ("team photo.jpg", "launch.jpg"):
            _row(page, name).locator(".state.done").wait_for(timeout=30_000 * PATIENCE)
        _row(page, "notes.txt").locator(".state.refused").wait_for()
        time.sleep(3.5)  # one status refresh
        page.mouse.move(0, 0)
        page.screenshot(path=shot)
        page.context.close()
    assert Path(shot).stat().st_size < 300_000
