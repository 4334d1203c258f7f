"""The kernel manager that autograding uses: a sandboxed kernel reached over Unix sockets.

nbgrader's execute step asks a kernel manager to start a kernel from the notebook's
kernel specification (``python -m ipykernel_launcher -f {connection_file}``). This
manager wraps that command in :mod:`course_lib.grading.sandbox`, keeps the connection
file and the kernel's sockets in a private folder that the sandbox can see, and uses
the IPC transport: a kernel without a network cannot use TCP, even on loopback.
"""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Integer, Unicode

from course_lib.grading.sandbox import Limits, SandboxSpec, kernel_command

__all__ = ["SandboxKernelManager"]


class SandboxKernelManager(AsyncKernelManager):
    """Start each kernel through the sandbox launcher, with its limits."""

    runtime_dir = Unicode(
        "", config=True, help="Folder for the connection file and the kernel's sockets."
    )
    sandboxed = Bool(True, config=True, help="Run the kernel in bubblewrap.")
    slot = Integer(0, config=True, help="The parallel worker; picks the kernel's user id.")
    memory_mb = Integer(Limits.memory_mb, config=True, help="Address space per process.")
    processes = Integer(Limits.processes, config=True, help="Processes and threads at once.")
    file_mb = Integer(Limits.file_mb, config=True, help="Largest file the kernel may write.")
    tmp_mb = Integer(Limits.tmp_mb, config=True, help="Size of the kernel's private /tmp.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not self.runtime_dir:
            raise ValueError("SandboxKernelManager.runtime_dir must name a folder")
        # Unix socket paths are short (about 100 bytes): keep the folder's path short.
        folder = Path(self.runtime_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.transport = "ipc"
        self.connection_file = str(folder / "kernel.json")
        self.ip = str(folder / "k")

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        """The kernel specification's command, started through the sandbox launcher."""
        argv = super().format_kernel_cmd(extra_arguments)
        workdir = Path(self._launch_args.get("cwd") or os.getcwd()).resolve()
        spec = SandboxSpec(
            workdir=str(workdir),
            runtime_dir=str(Path(self.runtime_dir).resolve()),
            limits=Limits(
                memory_mb=self.memory_mb,
                processes=self.processes,
                file_mb=self.file_mb,
                tmp_mb=self.tmp_mb,
            ),
            sandboxed=self.sandboxed,
            slot=self.slot,
        )
        return kernel_command(argv, spec)
