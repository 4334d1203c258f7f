"""Starting a student's kernel in a sandbox, with limits on what it may use.

On Linux with bubblewrap (``bwrap``) installed, each kernel runs in its own mount, PID,
network, IPC and UTS namespaces. Its file system holds only the system folders, the
Python installation, the ``course_lib`` package (read-only), a private ``/tmp``, the
submission's working folder and the folder that holds the kernel's connection file
(both writable). The course sources, the hidden tests, the gradebook and the other
students' work are simply not there. There is no network, not even to the grader: the
kernel talks to the grader over Unix sockets in the connection folder. When the kernel
ends, its PID namespace ends, and every process it started dies with it.

When the grader runs as root, the kernel drops to an unprivileged user id of its own
(one per parallel worker) so that the process limit counts only that kernel's tasks.

Without bubblewrap (macOS, Windows, containers that forbid namespaces) the same
launcher starts the kernel directly, with the same resource limits where the system
supports them: the student's code then runs with the grader's rights (see
docs/GRADING.md).

The kernel specification of an autograde run points at this module::

    python -P -m course_lib.grading.sandbox SPEC_JSON -- python -P -m ipykernel_launcher -f F

The first stage (outside) sets the limits and starts ``bwrap``; the second stage
(``--inside``, in the sandbox) drops privileges and replaces itself by the kernel.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Limits", "SandboxSpec", "kernel_command", "sandbox_status"]

logger = logging.getLogger(__name__)

# The first unprivileged user id given to sandboxed kernels; worker N gets BASE_UID + N.
BASE_UID = 61000

# Folders of the host that a kernel needs to run Python and the course's libraries.
_SYSTEM_FOLDERS = ("/usr", "/etc/alternatives", "/etc/fonts")
_SYSTEM_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/mime.types",
)
# Merged-/usr systems link these to folders under /usr; older ones have real folders.
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class Limits:
    """Resource limits for one kernel and everything it starts."""

    memory_mb: int = 4096  # address space of each process (RLIMIT_AS)
    processes: int = 256  # processes and threads the kernel's user may run at once
    file_mb: int = 256  # largest file it may write (RLIMIT_FSIZE)
    tmp_mb: int = 256  # size of its private /tmp (sandbox only)
    open_files: int = 1024  # open file descriptors per process


@dataclass(frozen=True)
class SandboxSpec:
    """What the launcher needs to know, passed to it as JSON on its command line."""

    workdir: str  # the submission's working folder (writable)
    runtime_dir: str  # holds the connection file and the kernel's sockets (writable)
    limits: Limits
    sandboxed: bool  # run in bubblewrap; False starts the kernel directly
    slot: int = 0  # the parallel worker, which picks the unprivileged user id

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SandboxSpec:
        data = json.loads(text)
        data["limits"] = Limits(**data["limits"])
        return cls(**data)


def kernel_command(kernel_argv: list[str], spec: SandboxSpec) -> list[str]:
    """Return the command that starts ``kernel_argv`` through the launcher.

    ``-P`` keeps the current folder (the student's working folder) off ``sys.path``
    for the launcher and for the kernel, so that a file handed in beside the notebook
    and named like a module (``torch.py``, ``ipykernel_launcher.py``) is never imported
    in place of the real one.
    """
    argv = list(kernel_argv)
    if argv and Path(argv[0]).name.startswith("python") and "-P" not in argv[1:2]:
        argv.insert(1, "-P")
    return [sys.executable, "-P", "-m", "course_lib.grading.sandbox", spec.to_json(), "--", *argv]


# ----------------------------------------------------------------------------------------------
# Is the sandbox available here?
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def sandbox_status() -> tuple[bool, str]:
    """Return whether kernels can be sandboxed here and, if not, why not.

    The answer comes from starting a real sandbox once: bubblewrap may be installed
    where the system forbids the namespaces it needs.
    """
    if not sys.platform.startswith("linux"):
        return False, f"bubblewrap sandboxing needs Linux; this system is {sys.platform}"
    if shutil.which("bwrap") is None:
        return False, "bubblewrap is not installed (e.g. `apt-get install -y bubblewrap`)"
    with tempfile.TemporaryDirectory(prefix="course-probe-") as tmp:
        spec = SandboxSpec(workdir=tmp, runtime_dir=tmp, limits=Limits(), sandboxed=True)
        command = _bwrap_command(spec, [sys.executable, "-P", "-c", "print('ok')"])
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            return False, f"bubblewrap could not start a sandbox: {error}"
    if result.returncode != 0 or result.stdout.strip() != "ok":
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return False, f"bubblewrap could not start a sandbox: {detail[0]}"
    return True, "kernels run in a bubblewrap sandbox"


# ----------------------------------------------------------------------------------------------
# Building the bubblewrap command
# ----------------------------------------------------------------------------------------------


def _python_folders() -> list[str]:
    """Folders that hold this Python, its standard library and its installed packages."""
    import course_lib

    folders = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    folders.add(str(Path(sys.executable).resolve().parent.parent))
    # An editable install maps course_lib to its checkout: expose that package only.
    folders.add(str(Path(course_lib.__file__).resolve().parent))
    return sorted(f for f in folders if Path(f).is_dir())


def _kernel_env(spec: SandboxSpec) -> dict[str, str]:
    """The kernel's whole environment: nothing is inherited from the grader."""
    scripts = str(Path(sys.executable).parent)
    return {
        "PATH": os.pathsep.join([scripts, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": spec.workdir,
        "USER": "student",
        "LOGNAME": "student",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp" if spec.sandboxed else spec.workdir,
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(Path(spec.workdir) / ".matplotlib"),
        # One math thread per kernel: parallel workers must not fight over the cores.
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "NUMEXPR_MAX_THREADS": "1",
        # Few malloc arenas keep the address space, which the memory limit counts, small.
        "MALLOC_ARENA_MAX": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "NBGRADER_EXECUTION": "autograde",
    }


def _bwrap_command(spec: SandboxSpec, inner: list[str], info_fd: int | None = None) -> list[str]:
    """Return the ``bwrap`` command line that runs ``inner`` in the sandbox."""
    # No user namespace when run as root: the kernel then drops to a real unprivileged
    # user id, which the process limit counts (bubblewrap also forbids setuid programs).
    command = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    command += ["--unshare-cgroup-try", "--die-with-parent"]
    if os.getuid() != 0:
        command.append("--unshare-user")
    command += ["--hostname", "grading", "--proc", "/proc", "--dev", "/dev"]
    command += ["--perms", "1777", "--size", str(spec.limits.tmp_mb * 2**20), "--tmpfs", "/tmp"]

    # Read-only system and Python folders; symlinks such as /lib -> usr/lib kept as links.
    for link in _ROOT_LINKS:
        if os.path.islink(link):
            command += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            command += ["--ro-bind", link, link]
    binds = [("--ro-bind", f) for f in (*_SYSTEM_FOLDERS, *_python_folders()) if os.path.isdir(f)]
    binds += [("--ro-bind", f) for f in _SYSTEM_FILES if os.path.exists(f)]
    # The only writable places: the submission's folder and the kernel's sockets.
    binds += [("--bind", f) for f in dict.fromkeys([spec.workdir, spec.runtime_dir])]

    # bubblewrap would create the folders above a mount point readable by root only.
    parents: dict[str, None] = {}
    for _, path in binds:
        for parent in reversed(Path(path).parents[:-1]):
            parents.setdefault(str(parent))
    for parent in parents:
        command += ["--perms", "0755", "--dir", parent]
    for kind, path in binds:
        command += [kind, path, path]
    if info_fd is not None:
        command += ["--info-fd", str(info_fd)]
    command += ["--chdir", spec.workdir, "--clearenv"]
    for name, value in _kernel_env(spec).items():
        command += ["--setenv", name, value]
    return [*command, "--", *inner]


# ----------------------------------------------------------------------------------------------
# The launcher: runs as the kernel's process, outside and then inside the sandbox
# ----------------------------------------------------------------------------------------------


# prctl(2) options, from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    """Call Linux's prctl(2); raise OSError when it fails."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _die_with_parent() -> None:
    """Have the kernel receive SIGKILL as soon as its parent process ends."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _set_limits(limits: Limits) -> None:
    """Apply the per-process limits to this process and everything it starts."""
    import resource

    wanted = {
        "RLIMIT_AS": limits.memory_mb * 2**20,
        "RLIMIT_FSIZE": limits.file_mb * 2**20,
        "RLIMIT_NOFILE": limits.open_files,
        "RLIMIT_CORE": 0,
    }
    for name, value in wanted.items():
        which = getattr(resource, name, None)
        if which is None:
            continue
        try:
            _, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError) as error:  # e.g. macOS refuses RLIMIT_AS
            logger.debug("could not set %s: %s", name, error)


def _task_count(uid: int) -> int:
    """Processes and threads that ``uid`` runs now (Linux; 0 where /proc is missing)."""
    count = 0
    for entry in Path("/proc").glob("[0-9]*/task/[0-9]*"):
        try:
            if entry.stat().st_uid == uid:
                count += 1
        except OSError:
            continue
    return count


def _limit_processes(uid: int, processes: int) -> None:
    """Let ``uid`` run at most ``processes`` more tasks than it runs now (Linux only).

    Elsewhere the tasks of a user cannot be counted, and a limit below what the user
    already runs would stop the kernel from starting anything.
    """
    import resource

    if not Path("/proc/self/task").is_dir():
        return
    try:
        ceiling = _task_count(uid) + processes
        resource.setrlimit(resource.RLIMIT_NPROC, (ceiling, ceiling))
    except (ValueError, OSError, AttributeError) as error:
        logger.debug("could not limit processes: %s", error)


def _inside(spec: SandboxSpec, kernel_argv: list[str]) -> None:
    """In the sandbox: drop to the worker's own user id, then become the kernel."""
    if os.getuid() == 0:
        uid = BASE_UID + spec.slot
        for folder in dict.fromkeys([spec.workdir, spec.runtime_dir]):
            for path in [Path(folder), *Path(folder).rglob("*")]:
                os.lchown(path, uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        # This user id is ours alone, so the count starts from zero.
        _limit_processes(uid, spec.limits.processes)
        # Changing the user id cancels bubblewrap's --die-with-parent: ask for it again.
        _die_with_parent()
    os.execv(kernel_argv[0], kernel_argv)


def _kill_descendants() -> None:
    """Kill every process left behind by the kernel (they were reparented to us)."""
    me = os.getpid()
    for _ in range(50):
        children = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(
                    line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
                )
            except OSError:
                continue
            if int(fields.get("PPid", "0").strip() or 0) == me:
                children.append(int(status.parent.name))
        if not children:
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        time.sleep(0.02)


def _unsandboxed(spec: SandboxSpec, kernel_argv: list[str]) -> int:
    """Start the kernel directly, stay as its parent and clean up what it leaves behind."""
    env = _kernel_env(spec)
    _limit_processes(os.getuid(), spec.limits.processes)
    if not sys.platform.startswith("linux"):
        os.execve(kernel_argv[0], kernel_argv, env)

    # Orphans of the kernel become our children, so we can kill them when it ends.
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    kernel = subprocess.Popen(kernel_argv, env=env, preexec_fn=_die_with_parent)
    # Interrupts reach the whole process group; only the kernel should act on them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: kernel.kill())
    code = kernel.wait()
    _kill_descendants()
    return code


def _child_of(pid: int) -> int | None:
    """The first child process of ``pid``, or ``None`` when it has none (Linux)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        found = children.read_text().split()
    except OSError:
        found = []
    return int(found[0]) if found else None


def _read_child_pid(fd: int) -> int | None:
    """Read bubblewrap's ``--info-fd`` report: the host pid of the sandbox's first process."""
    data = b""
    decoder = json.JSONDecoder()
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        data += chunk
        try:
            info, _ = decoder.raw_decode(data.decode())
        except ValueError:
            continue
        return int(info["child-pid"])


def _sandboxed(spec_json: str, spec: SandboxSpec, kernel_argv: list[str]) -> int:
    """Run the kernel in bubblewrap, relaying interrupts to it; return its exit status.

    bubblewrap runs in a process group of its own: the kernel manager signals our group,
    and bubblewrap would die of an interrupt meant for the kernel. Inside, bubblewrap's
    first process waits for the kernel; when the kernel ends, that process ends and the
    system kills every other process of the sandbox. If we are killed, bubblewrap and
    the sandbox die with us (``--die-with-parent``).
    """
    if os.getuid() != 0:
        # Not root: the kernel keeps our user id, whose other processes count too.
        _limit_processes(os.getuid(), spec.limits.processes)
    inner = [sys.executable, "-P", "-m", "course_lib.grading.sandbox", "--inside", spec_json]
    read_end, write_end = os.pipe()
    command = _bwrap_command(spec, [*inner, "--", *kernel_argv], info_fd=write_end)
    sandbox = subprocess.Popen(command, pass_fds=(write_end,), start_new_session=True)
    os.close(write_end)
    first = _read_child_pid(read_end)
    os.close(read_end)

    def relay(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and first is not None:
            kernel = _child_of(first)
            if kernel is not None:
                os.kill(kernel, signal.SIGINT)
        elif signum == signal.SIGTERM:
            sandbox.kill()

    signal.signal(signal.SIGINT, relay)
    signal.signal(signal.SIGTERM, relay)
    return sandbox.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the launcher (see the module's docstring for the command line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    inside = argv[:1] == ["--inside"]
    if inside:
        argv = argv[1:]
    if len(argv) < 3 or argv[1] != "--":
        raise ValueError(f"expected SPEC_JSON -- KERNEL_COMMAND..., got {argv!r}")
    spec, kernel_argv = SandboxSpec.from_json(argv[0]), argv[2:]

    if inside:
        _inside(spec, kernel_argv)
    if sys.platform.startswith("linux"):
        # If nbgrader is killed, stop the kernel too (the handlers below clean up).
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    _set_limits(spec.limits)
    if spec.sandboxed:
        return _sandboxed(argv[0], spec, kernel_argv)
    return _unsandboxed(spec, kernel_argv)


if __name__ == "__main__":
    sys.exit(main())
