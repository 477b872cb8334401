"""Model folders on the Hugging Face Hub (the `[hub]` extra: `pip install -e ".[hub]"`): the same
folder `cvae-jax export` writes, uploaded as a model repository and downloaded by its id.

    hub.push_to_hub("models/digits-cvae", "my-org/digits-cvae")
    model = cvae_jax.from_pretrained("my-org/digits-cvae")
"""

from __future__ import annotations

from pathlib import Path


def upload_files(folder: str | Path) -> list[str]:
    """The files of a model folder that an upload sends (the folder's own files, no temporary ones)."""
    from cvae_jax.apps.pretrained import FILES

    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a complete model folder (missing {missing}): write it with cvae-jax export"
        )
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError("the Hugging Face Hub needs the [hub] extra: pip install -e '.[hub]'") from None
    return huggingface_hub


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Uploads a model folder to the model repository `repo_id` (created if absent); returns its URL."""
    files = upload_files(folder)
    hub = _hub()
    api = hub.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", allow_patterns=files)
    return f"https://huggingface.co/{repo_id}"


def download(repo_id: str) -> Path:
    """The local folder of the model repository `repo_id` (downloaded once, then from the cache)."""
    return Path(_hub().snapshot_download(repo_id, repo_type="model"))
