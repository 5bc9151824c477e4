"""`edgeguard blur` and `edgeguard detect` end to end: real files, real model, real faces."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import piexif
import pytest
from PIL import Image

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def edgeguard(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeguard", *map(str, args)],
                          capture_output=True, text=True, env=ENV, check=False, timeout=300)


def _jpeg_with_everything(rgb: np.ndarray, path: Path) -> None:
    """A JPEG carrying GPS, a serial number, an embedded thumbnail (of the raw picture!),
    XMP, an ICC profile and a comment: every metadata leak we must not pass on."""
    thumb = io.BytesIO()
    Image.fromarray(rgb).resize((160, 160)).save(thumb, "JPEG")
    exif = piexif.dump({
        "0th": {piexif.ImageIFD.Make: b"LeakCam", piexif.ImageIFD.Model: b"X1"},
        "Exif": {piexif.ExifIFD.BodySerialNumber: b"SN-123456",
                 piexif.ExifIFD.DateTimeOriginal: b"2026:01:02 03:04:05"},
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N",
                piexif.GPSIFD.GPSLatitude: ((52, 1), (31, 1), (0, 1))},
        "1st": {piexif.ImageIFD.JPEGInterchangeFormat: 0},
        "thumbnail": thumb.getvalue(),
    })
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">SECRET-XMP</x:xmpmeta>'
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(rgb).save(path, "JPEG", quality=95, exif=exif, icc_profile=icc,
                              comment=b"SECRET-COMMENT", xmp=xmp)


def test_blur_strips_every_metadata_block_and_redacts(tmp_path: Path,
                                                      astronaut_rgb: np.ndarray) -> None:
    src = tmp_path / "in" / "astronaut.jpg"
    src.parent.mkdir()
    _jpeg_with_everything(astronaut_rgb, src)
    raw = src.read_bytes()
    assert b"SN-123456" in raw and b"SECRET-XMP" in raw and raw.count(b"\xff\xd8") >= 2
    out = tmp_path / "out"
    res = edgeguard("blur", src, "-o", out)
    assert res.returncode == 0, res.stderr
    dst = out / "astronaut.jpg"
    data = dst.read_bytes()
    for leak in (b"Exif", b"LeakCam", b"SN-123456", b"SECRET-XMP", b"SECRET-COMMENT",
                 b"ICC_PROFILE", b"http://ns.adobe.com"):
        assert leak not in data, leak
    assert data.count(b"\xff\xd8") == 1  # no embedded thumbnail JPEG
    img = Image.open(dst)
    assert img.format == "JPEG" and not img.info.get("exif") and not img.getexif()
    got = np.asarray(img.convert("RGB")).astype(int)
    face = (slice(90, 150), slice(190, 260))  # eyes, nose and mouth
    background = (slice(300, 500), slice(0, 100))
    assert np.abs(got[face] - astronaut_rgb[face]).mean() > 12
    assert np.abs(got[background] - astronaut_rgb[background]).mean() < 4
    assert list(out.iterdir()) == [dst]  # no temporary file left


def test_exif_orientation_applied_before_detection(tmp_path: Path,
                                                   astronaut_rgb: np.ndarray) -> None:
    # Stored rotated 90 degrees clockwise, with orientation 8 saying "rotate back".
    stored = np.ascontiguousarray(np.rot90(astronaut_rgb, k=-1))
    p = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(p, "JPEG", quality=95,
                                 exif=piexif.dump({"0th": {piexif.ImageIFD.Orientation: 8}}))
    res = edgeguard("detect", "--json", p)  # --json: accepted, for existing scripts
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    x1, y1, x2, y2 = max(rec["faces"], key=lambda f: f["score"])["box"]
    # in the upright picture the face is upper-middle, as in the original
    assert 190 < (x1 + x2) / 2 < 260 and 90 < (y1 + y2) / 2 < 150


def test_detect_json_lines_format(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    good = tmp_path / "a.png"
    Image.fromarray(astronaut_rgb).save(good)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"\x00" * 100)
    res = edgeguard("detect", good, bad)
    assert res.returncode == 1
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines[0]["path"] == str(good)
    assert (lines[0]["width"], lines[0]["height"]) == (512, 512)
    face = lines[0]["faces"][0]
    assert set(face) == {"box", "score", "weak", "region"} and 0.5 < face["score"] <= 1
    assert face["weak"] is False
    assert all(isinstance(v, int) for v in face["region"])
    assert isinstance(lines[0]["ms"], float)
    assert set(lines[1]) == {"path", "error"} and lines[1]["path"] == str(bad)
    assert "Traceback" not in res.stderr


def test_bad_inputs_one_line_each_others_go_on(tmp_path: Path,
                                               astronaut_rgb: np.ndarray) -> None:
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(astronaut_rgb).save(d / "good.jpg", quality=90)
    full = (d / "good.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "random.jpg").write_bytes(np.random.default_rng(1).bytes(5000))
    (d / "notes.txt").write_text("hello")
    out = tmp_path / "out"
    res = edgeguard("blur", d, tmp_path / "missing.jpg", "-o", out)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if ": " in line and "INFO" not in line]
    by_name = {Path(line.split(": ", 1)[0]).name: line.split(": ", 1)[1] for line in errors}
    assert "truncated" in by_name["truncated.jpg"] or "corrupt" in by_name["truncated.jpg"]
    assert by_name["empty.png"] == "empty file"
    assert "not an image" in by_name["random.jpg"]
    assert "not an image" in by_name["notes.txt"]
    assert by_name["missing.jpg"] == "file not found"
    assert sorted(p.name for p in out.rglob("*")) == ["good.jpg"]  # no partial output
    assert "1 of 6 redacted" in res.stdout


def test_face_at_the_corner_redacts_last_row_and_column(tmp_path: Path,
                                                        astronaut_rgb: np.ndarray) -> None:
    crop = np.ascontiguousarray(astronaut_rgb[:170, :270])  # the face runs off right and bottom
    src = tmp_path / "corner.png"
    Image.fromarray(crop).save(src)
    res = edgeguard("detect", src)
    region = json.loads(res.stdout)["faces"][0]["region"]
    assert region[2] == 270 and region[3] == 170  # exclusive bounds reach the edge
    out = tmp_path / "out"
    assert edgeguard("blur", src, "-o", out, "--mode", "solid", "--shape", "box").returncode == 0
    got = np.asarray(Image.open(out / "corner.png").convert("RGB"))
    assert (got[-1, region[0]:] == 0).all() and (got[region[1]:, -1] == 0).all()


def test_odd_pixel_formats_are_handled(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    grey = tmp_path / "grey.png"
    Image.fromarray(astronaut_rgb).convert("L").save(grey)
    alpha = tmp_path / "alpha.png"
    Image.fromarray(np.dstack([astronaut_rgb, np.full(astronaut_rgb.shape[:2], 255,
                                                         np.uint8)])).save(alpha)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(astronaut_rgb).convert("CMYK").save(cmyk, quality=95)
    res = edgeguard("detect", grey, alpha, cmyk)
    assert res.returncode == 0, res.stderr
    for line in res.stdout.splitlines():
        best = max(json.loads(line)["faces"], key=lambda f: f["score"])
        x1, y1, x2, y2 = best["box"]
        assert best["score"] > 0.8 and 190 < (x1 + x2) / 2 < 260 and 90 < (y1 + y2) / 2 < 150


def test_module_entry_point_and_version() -> None:
    res = edgeguard("--version")
    assert res.returncode == 0 and res.stdout.startswith("edgeguard ")


def test_bad_config_is_one_line(tmp_path: Path, astronaut_rgb: np.ndarray) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[redact]\nexpnd = 2\n")
    res = edgeguard("blur", "--config", cfg, tmp_path / "x.jpg", "-o", tmp_path / "o")
    assert res.returncode == 2
    assert res.stderr.strip() == (f"edgeguard: {cfg}: unknown key redact.expnd "
                                  "(did you mean redact.expand?)")


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_output_format_option(tmp_path: Path, astronaut_rgb: np.ndarray, fmt: str) -> None:
    src = tmp_path / "a.jpg"
    Image.fromarray(astronaut_rgb).save(src)
    assert edgeguard("blur", src, "-o", tmp_path / "o", "--format", fmt).returncode == 0
    suffix = {"png": ".png", "webp": ".webp"}[fmt]
    assert Image.open(tmp_path / "o" / f"a{suffix}").format == fmt.upper()
