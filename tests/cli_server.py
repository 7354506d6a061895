"""Run the real ``transferkit`` CLI in child processes, cheaply: a fork server.

Starting a Python that imports torch, timm and transferkit takes 5-20 s on the shared 2-core
test machine, longer than the tiny commands the fault tests run. So one server process
imports everything once (and runs no torch op, so no thread pool exists yet), and every
command is a ``fork()`` of it: a fresh process whose stdout/stderr go to files, which runs
``transferkit.cli.app`` with the given arguments exactly as the ``transferkit`` console script
does (``main()`` -> typer -> ``sys.exit``), and which a ``SIGKILL`` really kills.
``TRANSFERKIT_TEST_KILL_AT`` in ``env`` arms ``transferkit.io.kill_point`` in that child.

``CliServer.run(args, ...) -> CliResult(rc, stdout, stderr)``; ``rc`` is negative for a signal
(``-9`` after ``SIGKILL``), like ``subprocess``.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

SERVER = textwrap.dedent(r"""
    import json, os, sys, traceback
    import torch
    torch.set_num_threads(1)
    import h5py, safetensors.torch, sklearn.linear_model, lightning_fabric  # noqa: F401
    import transferkit.api, transferkit.backbones, transferkit.cli, transferkit.data  # noqa: F401
    import transferkit.engine, transferkit.features, transferkit.strategies  # noqa: F401
    import transferkit.io as tkio

    def child(req):
        code = 1
        try:
            os.chdir(req["cwd"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                f = os.open(req[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            os.environ.update(req["env"])
            tkio.arm_kill_point(req["env"].get(tkio.KILL_ENV))
            sys.argv = ["transferkit", *req["args"]]
            try:
                transferkit.cli.app(args=req["args"], prog_name="transferkit")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            child(req)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
""")


@dataclass
class CliResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.rc == -9


class CliServer:
    def __init__(self, env: dict[str, str] | None = None, startup_timeout: float = 300.0):
        self.workdir = Path(tempfile.mkdtemp(prefix="tk-cli-"))
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
                    "COLUMNS": "200", **(env or {})}
        full_env.pop("TRANSFERKIT_TEST_KILL_AT", None)
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=full_env, text=True, bufsize=1)
        self._read(startup_timeout)
        self.count = 0

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise TimeoutError(f"the CLI fork server did not answer within {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the CLI fork server died (exit code {self.proc.wait()})")
        return json.loads(line)

    def run(self, *args: str, env: dict[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
            timeout: float = 300.0) -> CliResult:
        """``transferkit ARGS`` in a forked child; ``env`` is added to the server's environment."""
        self.count += 1
        out, err = self.workdir / f"{self.count}.out", self.workdir / f"{self.count}.err"
        req = {"args": [str(a) for a in args], "env": {k: str(v) for k, v in (env or {}).items()},
               "cwd": str(cwd or self.workdir), "stdout": str(out), "stderr": str(err)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        rc = self._read(timeout)["rc"]
        return CliResult(rc, out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
