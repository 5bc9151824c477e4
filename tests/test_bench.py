"""`edgeguard bench`: the scoring on synthetic annotations, the child runner, the report.

Nothing here reads ../shared: the sets are built in tmp_path from scikit-image's astronaut.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edgeguard.bench import report, score, sets, suite
from edgeguard.bench.runners import (
    PEERS,
    BenchRunner,
    ChildRun,
    Measurement,
    RunKind,
    Status,
    run_child,
)

# The astronaut's face (Eileen Collins) in skimage.data.astronaut(), 512x512, hairline
# excluded, forehead to chin: drawn by hand, x2/y2 exclusive.
ASTRONAUT_FACE = (175, 60, 260, 165)


def _img(faces: Sequence[Sequence[float]], w: int = 100, h: int = 100, file: str = "a.jpg",
         ignore: Sequence[Sequence[float]] = ()) -> dict[str, Any]:
    return {"file": f"images/{file}", "width": w, "height": h,
            "faces": [list(f) for f in faces], "ignore": [list(g) for g in ignore]}


# -- score -------------------------------------------------------------------------------


def test_a_fully_covered_face_is_protected_in_its_height_bucket() -> None:
    faces = [(0, 0, 10, 10), (20, 0, 40, 20), (0, 40, 40, 80), (100, 0, 180, 100),
             (200, 0, 300, 150)]
    s = score.score_set([_img(faces, w=400, h=200)],
                        {"a.jpg": [[0, 0, 10, 10], [200, 0, 300, 150]]})
    assert s.total == (1, 1, 1, 1, 1)
    assert s.protected == (1, 0, 0, 0, 1)
    assert s.all == pytest.approx(2 / 5)
    assert s.ge16 == pytest.approx(1 / 4)
    assert s.ge32 == pytest.approx(1 / 3)


@pytest.mark.parametrize(("height", "bucket"), [(0, 0), (15, 0), (16, 1), (31, 1), (32, 2),
                                                (127, 3), (128, 4), (4000, 4)])
def test_bucket_edges_are_lower_inclusive(height: int, bucket: int) -> None:
    assert score.bucket_of(height) == bucket


@pytest.mark.parametrize(("cover_cols", "protected"), [(7, 1), (6, 0)])
def test_protection_needs_seventy_percent_of_the_box(cover_cols: int, protected: int) -> None:
    s = score.score_set([_img([(10, 10, 20, 20)])], {"a.jpg": [[10, 10, 10 + cover_cols, 20]]})
    assert s.protected[0] == protected


def test_coverage_counts_the_union_of_regions() -> None:
    # Two halves, each 50% of the face, together protect it; overlap is not counted twice.
    s = score.score_set([_img([(0, 0, 40, 40)])], {"a.jpg": [[0, 0, 20, 40], [20, 0, 40, 40]]})
    assert s.protected == (0, 0, 1, 0, 0)
    s = score.score_set([_img([(0, 0, 40, 40)])], {"a.jpg": [[0, 0, 20, 40], [0, 0, 20, 40]]})
    assert s.protected == (0, 0, 0, 0, 0)


def test_excess_is_redacted_area_outside_faces_and_ignore_boxes() -> None:
    # 100x100 image; face 10x10; region 20x10 over the face plus 10x10 beside it: 1% excess.
    im = _img([(0, 0, 10, 10)])
    s = score.score_set([im], {"a.jpg": [[0, 0, 20, 10]]})
    assert s.excess == pytest.approx(0.01)
    # The part beside the face is an ignored face: no excess and no false positive.
    im = _img([(0, 0, 10, 10)], ignore=[(10, 0, 20, 10)])
    s = score.score_set([im], {"a.jpg": [[0, 0, 20, 10], [10, 0, 20, 10]]})
    assert s.excess == 0.0
    assert s.false_positives == 0
    # Averaged over images: a second image with nothing redacted halves it.
    s = score.score_set([_img([(0, 0, 10, 10)]), _img([], file="b.jpg")],
                        {"a.jpg": [[0, 0, 20, 10]], "b.jpg": []})
    assert s.excess == pytest.approx(0.005)


def test_a_region_mostly_off_every_face_is_a_false_positive() -> None:
    im = _img([(0, 0, 10, 10)])
    # 10% of this region lies on the face: not a false positive; 5%: one.
    s = score.score_set([im], {"a.jpg": [[0, 0, 10, 10], [9, 0, 19, 10], [50, 50, 70, 70]]})
    assert s.false_positives == 1
    assert s.fp_per_image == 1.0
    s = score.score_set([im], {"a.jpg": [[0, 0, 10, 20], [95, 0, 115, 10]]})
    assert s.false_positives == 1  # half off the image and off every face


def test_missing_and_failed_images_count_as_unredacted() -> None:
    ims = [_img([(0, 0, 40, 40)], file="a.jpg"), _img([(0, 0, 40, 40)], file="b.jpg"),
           _img([(0, 0, 40, 40)], file="c.jpg")]
    lines = "\n".join([
        json.dumps({"path": "/x/a.jpg", "faces": [{"box": [0, 0, 40, 40], "score": 0.9,
                                                   "region": [-5, -5, 45, 45]}], "ms": 3}),
        json.dumps({"path": "/x/b.jpg", "error": "cannot decode"}),
    ])
    s = score.score_set(ims, score.parse_results(lines))  # c.jpg has no line at all
    assert (s.images, s.missing, s.protected[2], s.total[2]) == (3, 2, 1, 3)
    assert s.all == pytest.approx(1 / 3)


def test_regions_not_boxes_are_scored_and_coordinates_clip_without_wrapping() -> None:
    # The detect line's region starts at negative coordinates: it must cover the corner,
    # not wrap to the far side of the image.
    lines = json.dumps({"path": "a.jpg", "faces": [{"box": [90, 90, 95, 95],
                                                    "region": [-10, -10, 30, 30]}]})
    s = score.score_set([_img([(0, 0, 20, 20)])], score.parse_results(lines))
    assert s.protected == (0, 1, 0, 0, 0)
    assert s.excess == pytest.approx((30 * 30 - 20 * 20) / 10_000)


def test_a_face_partly_outside_the_image_is_clipped_before_bucketing() -> None:
    s = score.score_set([_img([(80, 80, 120, 120)])], {"a.jpg": [[80, 80, 100, 100]]})
    assert s.total == (0, 1, 0, 0, 0)  # 20 px tall once clipped, not 40
    assert s.protected == (0, 1, 0, 0, 0)


def test_peer_result_files_are_keyed_by_basename_and_min_px_drops_small_faces() -> None:
    text = json.dumps({"tool": "deface", "seconds": 1.0,
                       "boxes": {"/data/images/a.jpg": [[0, 0, 10, 10, 0.9]],
                                 "/data/images/b.jpg": None}})
    res = score.parse_results(text)
    assert res == {"a.jpg": [[0, 0, 10, 10]], "b.jpg": None}
    ims = [_img([(0, 0, 10, 10), (50, 50, 90, 90)])]
    assert score.score_set(ims, res).total == (1, 0, 1, 0, 0)
    assert score.score_set(ims, res, min_px=16).total == (0, 0, 1, 0, 0)


def test_an_empty_bucket_is_nan_and_no_faces_scores_zero() -> None:
    s = score.score_set([_img([])], {"a.jpg": []})
    assert all(math.isnan(v) for v in s.by_bucket)
    assert (s.all, s.ge16, s.ge32) == (0.0, 0.0, 0.0)


def test_garbage_result_lines_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="line 2"):
        score.parse_results('{"path": "a.jpg", "faces": []}\nnot json')


def test_the_shared_scorers_printed_table_is_parsed() -> None:
    # Output of eval_redaction.py for two result files (copied, not read from ../shared).
    out = (
        "tool                        0-16px      16-32px      32-64px     64-128px      >=128px"
        "   >=16px   >=32px     all  excess%  fp/img  err\n"
        "deface.json                   nan%       100.0%        95.5%       100.0%          nan%"
        "    97.4%    98.7%   91.2%   13.50%    0.40    0\n"
        "edgeguard-balanced.jso        0.0%        50.0%       100.0%       100.0%       100.0%"
        "    90.0%   100.0%   80.0%    2.25%    0.10    1\n"
        "faces                            0            2            4            1            0\n")
    assert suite.parse_eval_output(out) == [(91.2, 13.5), (80.0, 2.25)]


# -- sets --------------------------------------------------------------------------------


def _write_set(root: Path, name: str, images: list[dict[str, Any]]) -> Path:
    d = root / name
    (d / "images").mkdir(parents=True)
    (d / "annotations.json").write_text(json.dumps({"dataset": name, "images": images}))
    return d


def test_sets_are_found_in_a_folder_of_sets_and_as_single_folders(tmp_path: Path) -> None:
    a = _write_set(tmp_path / "faces", "a", [_img([])])
    b = _write_set(tmp_path / "faces", "b", [_img([], w=4000, h=3000)])
    (tmp_path / "faces" / "not_a_set").mkdir()
    c = _write_set(tmp_path, "c", [_img([])])
    found = sets.resolve_sets([c, a], default_dir=tmp_path / "faces")
    assert [s.root for s in found] == [a, b, c]  # a once, though named twice
    assert [s.large for s in found] == [False, True, False]
    assert sets.sample_size(found[0], quick=True, limit=None) == 20
    assert sets.sample_size(found[1], quick=True, limit=None) == 3
    assert sets.sample_size(found[1], quick=True, limit=7) == 7
    assert sets.sample_size(found[1], quick=False, limit=None) is None


def test_no_set_anywhere_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(sets.BenchSetError, match="no annotated sets"):
        sets.resolve_sets([], default_dir=tmp_path / "absent")
    proc = subprocess.run([sys.executable, "-m", "edgeguard", "bench", "--no-default-sets",
                           "--sets", str(tmp_path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=sets.repo_root(), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("edgeguard: no annotated sets")
    assert proc.stderr.count("\n") == 1


def test_the_repo_root_is_where_pyproject_is() -> None:
    root = sets.repo_root()
    assert root is not None and (root / "pyproject.toml").is_file()
    assert sets.default_sets_dir(root) == root.parent / "shared" / "data" / "faces"


# -- runners -----------------------------------------------------------------------------


def test_peak_rss_is_the_childs_own_not_the_largest_child_so_far() -> None:
    big = run_child([sys.executable, "-c", "b = bytearray(150 * 2**20); b[::4096] = b'x' * "
                                           "len(b[::4096])"])
    small = run_child([sys.executable, "-c", "pass"])
    assert big.ok and small.ok
    assert big.peak_rss_kib >= 150 * 1024
    assert small.peak_rss_kib < 100 * 1024
    assert small.wall_s > 0


def test_a_failing_child_reports_its_last_stderr_line() -> None:
    r = run_child([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); "
                                         "sys.exit(3)"])
    assert r.returncode == 3
    assert r.reason() == "exit 3: boom"


def test_a_peer_without_its_environment_is_skipped_with_a_note(tmp_path: Path) -> None:
    r = BenchRunner(repo_root=tmp_path, peers_dir=tmp_path, tools_dir=tmp_path)
    m = r.peer(PEERS["deface"], [tmp_path / "x.jpg"], tmp_path)
    assert m.status is Status.SKIPPED
    assert ".venv-deface" in m.note and "peers.sh" in m.note


class FakeChildren:
    """Stands in for run_child: answers `edgeguard detect` with fixed lines and times."""

    def __init__(self, startup_s: float, per_image_s: float) -> None:
        self.startup_s, self.per_image_s = startup_s, per_image_s
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], *, stdout: Any = None, **_: Any) -> ChildRun:
        self.calls.append(list(argv))
        files = [a for a in argv if a.endswith(".jpg")]
        for f in files:
            stdout.write(json.dumps({"path": f, "width": 10, "height": 10, "faces": [],
                                     "ms": self.per_image_s * 1000}).encode() + b"\n")
        wall = self.startup_s + self.per_image_s * len(files)
        return ChildRun(tuple(argv), 0, wall, 50_000, "")


def test_edgeguard_time_excludes_start_up_measured_on_one_image(tmp_path: Path) -> None:
    fake = FakeChildren(startup_s=1.5, per_image_s=0.2)
    r = BenchRunner(repo_root=tmp_path, run=fake, config=tmp_path / "c.toml")
    files = [tmp_path / f"{i}.jpg" for i in range(10)]
    m = r.detect(files, "fast", tmp_path)
    assert m.status is Status.OK
    assert m.startup_s == pytest.approx(1.5)
    assert m.seconds == pytest.approx(2.0)
    assert m.s_per_image == pytest.approx(0.2)
    assert len(fake.calls) == 2  # the one-image probe, then the set
    assert fake.calls[1][2:5] == ["edgeguard", "detect", "--profile"]
    assert fake.calls[1][-2:] == ["--config", str(tmp_path / "c.toml")]
    r.detect(files, "fast", tmp_path)
    assert len(fake.calls) == 3  # start-up is measured once per profile and probe


def test_a_slow_probe_cannot_push_the_time_below_what_the_child_measured(tmp_path: Path) -> None:
    """The probe's start-up comes from another process; when it took longer than the run's
    own (a busy machine), wall - start-up undercounts. The child's own per-image times are
    the floor: they were measured around the images and cannot be start-up."""
    class SlowProbe(FakeChildren):
        def __call__(self, argv: Sequence[str], **kw: Any) -> ChildRun:
            run = super().__call__(argv, **kw)
            slow = 3.0 if len(self.calls) == 1 else 0.0  # the probe is the first call
            return ChildRun(run.argv, run.returncode, run.wall_s + slow, run.peak_rss_kib,
                            run.stderr_tail)

    fake = SlowProbe(startup_s=0.5, per_image_s=0.1)
    r = BenchRunner(repo_root=tmp_path, run=fake, config=tmp_path / "c.toml")
    m = r.detect([tmp_path / "a.jpg", tmp_path / "b.jpg"], "fast", tmp_path)
    assert m.startup_s == pytest.approx(3.5)
    assert m.seconds == pytest.approx(0.2)  # not max(0, 0.7 - 3.5) = 0
    assert m.s_per_image == pytest.approx(0.1)


# -- the report, on a tiny set of real faces ---------------------------------------------


@pytest.fixture
def astronaut_set(tmp_path: Path, astronaut_rgb: np.ndarray) -> Path:
    """Two images: the astronaut, and a 1024x768 canvas with her at half size twice."""
    d = tmp_path / "sets" / "astro"
    (d / "images").mkdir(parents=True)
    bgr = cv2.cvtColor(astronaut_rgb, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(d / "images" / "astro.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    canvas = np.full((768, 1024, 3), 128, np.uint8)
    half = cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_AREA)
    canvas[100:356, 50:306] = half
    canvas[400:656, 600:856] = half
    cv2.imwrite(str(d / "images" / "pair.jpg"), canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])
    x1, y1, x2, y2 = ASTRONAUT_FACE
    halves = [[ox + x1 / 2, oy + y1 / 2, ox + x2 / 2, oy + y2 / 2]
              for ox, oy in ((50, 100), (600, 400))]
    ann = {"dataset": "astro", "images": [
        {"file": "images/astro.jpg", "width": 512, "height": 512,
         "faces": [list(ASTRONAUT_FACE)], "ignore": []},
        {"file": "images/pair.jpg", "width": 1024, "height": 768, "faces": halves,
         "ignore": []}]}
    (d / "annotations.json").write_text(json.dumps(ann))
    return d


class OracleRunner(BenchRunner):
    """A BenchRunner whose `detect` redacts exactly the first annotated face of each image, so
    the expected score is known; the codec floor runs for real."""

    def __init__(self, root: Path, annotations: dict[str, Any]) -> None:
        super().__init__(repo_root=root)
        self.annotations = annotations

    def detect(self, files: Sequence[Path], profile: str, workdir: Path) -> Measurement:
        out = workdir / f"edgeguard-{profile}.jsonl"
        by_name = {Path(im["file"]).name: im for im in self.annotations["images"]}
        with open(out, "w") as fh:
            for f in files:
                im = by_name[f.name]
                faces = [{"box": b, "score": 0.9, "region": b} for b in im["faces"][:1]]
                fh.write(json.dumps({"path": str(f), "width": im["width"],
                                     "height": im["height"], "faces": faces, "ms": 5}) + "\n")
        return Measurement(f"edgeguard {profile}", RunKind.DETECT, Status.OK, len(files),
                           profile=profile, result_path=out, wall_s=1.0, seconds=0.01 * len(files),
                           startup_s=0.9, peak_rss_kib=80 * 1024, per_image_ms=(5.0,) * len(files))


def test_the_report_is_written_as_markdown_json_and_a_plot(astronaut_set: Path,
                                                          tmp_path: Path) -> None:
    found = sets.resolve_sets([astronaut_set], use_default=False)
    runner = OracleRunner(sets.repo_root() or tmp_path,
                          json.loads((astronaut_set / "annotations.json").read_text()))
    runner.peers_dir = tmp_path  # no peer environments here: they must be reported skipped
    opts = suite.Options(profiles=("balanced",), peers=("deface",))
    out = tmp_path / "out"
    rep = suite.run_bench(found, opts, runner, out, eval_script=None)
    md, js, png = report.write_all(rep, out)

    text = md.read_text()
    assert "### astro: 2 of 2 images, 3 faces" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| edgeguard balanced |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # The first face of each image is redacted: the 512 px astronaut's (105 px tall), and
    # one of the two half-size ones (52 px) on the canvas.
    assert cells[report.COLUMNS.index("all")] == "66.7%"
    assert cells[report.COLUMNS.index("64-128 px")] == "100.0%"
    assert cells[report.COLUMNS.index("32-64 px")] == "50.0%"
    assert cells[report.COLUMNS.index("excess")] == "0.0%"
    # what users lose: one face of three left clear, the 52 px one (>= 16 and >= 32 alike)
    assert cells[report.COLUMNS.index("leak >=16")] == "33.3%"
    assert cells[report.COLUMNS.index("leak >=32")] == "33.3%"
    assert cells[report.COLUMNS.index("strays/img")] == "0.00"
    summary = text.split("## Summary", 1)[1].split("## Sets", 1)[0]
    assert "| astro | edgeguard balanced | 33.3% | 33.3% | 0.0% | 0.0 |" in summary
    assert "deface 1.5 (skipped)" in text and "not installed" in text

    data = json.loads(js.read_text())
    rows = {r["tool"]: r for r in data["sets"][0]["rows"]}
    assert rows["edgeguard balanced"]["score"]["all"] == pytest.approx(2 / 3)
    floor = rows["codec floor"]
    assert floor["status"] == "ok" and floor["peak_rss_mb"] > 0
    assert rows["edgeguard balanced"]["x_floor"] == pytest.approx(
        0.01 / floor["s_per_image"])
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_codec_floor_child_round_trips_real_files(astronaut_set: Path) -> None:
    files = sorted(str(p) for p in (astronaut_set / "images").iterdir())
    proc = subprocess.run([sys.executable, "-m", "edgeguard.bench.floor", "--backend", "opencv",
                           *files, str(astronaut_set / "annotations.json")],
                          capture_output=True, text=True, check=True,
                          cwd=sets.repo_root())
    rep = json.loads(proc.stdout)
    assert rep["backend"] == "opencv"
    assert len(rep["ms"]) == 2 and rep["errors"] == 1  # the JSON file is not an image
    assert rep["seconds"] >= sum(rep["ms"]) / 1000


def test_bench_end_to_end_with_the_real_detector(astronaut_set: Path, tmp_path: Path) -> None:
    """`edgeguard bench --sets DIR --peers none` runs the real `edgeguard detect` as a child."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "edgeguard", "bench", "--no-default-sets",
                           "--sets", str(astronaut_set), "--peers", "none", "--profiles",
                           "balanced", "--out", str(out), "--tools", str(tmp_path / "no-tools")],
                          capture_output=True, text=True, cwd=sets.repo_root(), check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| edgeguard balanced |" in proc.stdout
    data = json.loads((out / "bench.json").read_text())
    rows = {r["tool"]: r for r in data["sets"][0]["rows"]}
    ours = rows["edgeguard balanced"]
    assert ours["status"] == "ok", ours["note"]
    # The astronaut's own face (105 px tall) is redacted, without blurring half the picture.
    assert ours["score"]["protected"][3] == ours["score"]["faces"][3] == 1
    assert ours["score"]["excess"] < 0.10
    assert ours["score"]["missing"] == 0
    assert ours["s_per_image"] > 0 and ours["startup_s"] > 0
    assert 20 < ours["peak_rss_mb"] < 1000
    assert rows["codec floor"]["status"] == "ok"
    assert (out / "leak_by_size.png").is_file()
