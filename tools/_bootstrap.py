"""Create the project's virtualenv and install the project into it.

Used by the README's two commands, which must work on a machine that has
nothing but Python 3.  Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import venv

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV = pathlib.Path(os.environ.get("RMP_VENV", ROOT / ".venv"))
EXTRAS = "devcloud,compare,test"


def venv_python() -> pathlib.Path:
    return VENV / "bin" / "python"


def venv_bin(name: str) -> str:
    return str(VENV / "bin" / name)


def _fingerprint() -> str:
    """Changes whenever the declared dependencies change."""
    digest = hashlib.sha256()
    for name in ("setup.cfg", "setup.py"):
        digest.update((ROOT / name).read_bytes())
    digest.update(EXTRAS.encode())
    return digest.hexdigest()


def ensure_venv(quiet: bool = True) -> pathlib.Path:
    """Create ``.venv`` and install the project (editable) when needed."""
    stamp = VENV / ".rmp-installed"
    if stamp.exists() and stamp.read_text() == _fingerprint() and venv_python().exists():
        return venv_python()
    if not venv_python().exists():
        print(f"creating virtualenv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    print("installing rally-metadata-plugin and its dependencies (first run takes a minute)",
          flush=True)
    command = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check",
               "-e", f"{ROOT}[{EXTRAS}]"]
    if quiet:
        command.insert(4, "-q")
    result = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        # pip's own warnings are noise; its errors are what the user needs.
        errors = [l for l in result.stderr.splitlines() if "is ignored" not in l]
        sys.stderr.write("\n".join(errors) + "\n")
        raise SystemExit(f"pip install failed (exit {result.returncode})")
    stamp.write_text(_fingerprint())
    return venv_python()


def reexec_in_venv(script: str) -> None:
    """Run ``script`` again with the virtualenv's Python, unless already there."""
    python = ensure_venv()
    if pathlib.Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(str(python), [str(python), script, *sys.argv[1:]])
