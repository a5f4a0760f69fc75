"""`xinstruct push RUN REPO_ID`: a run's dataset folder to the Hugging Face Hub, as a dataset repository.

One commit through huggingface_hub holds the card (README.md, whose `configs` point at the Parquet files: `all`
and one per language) and the files it names, so what the Hub shows and what `load_dataset(REPO_ID)` reads are
the folder as it was exported. (datasets' own push_to_hub would lay the data out again under its own names and
rewrite the card's configs; the folder already is a loadable dataset.)"""

from __future__ import annotations

from pathlib import Path

from xinstruct.core.layout import RunLayout

PUSHED = ["README.md", "parquet/*.parquet", "stats.json", "verb_noun.png", "verb_noun.json"]


def push_dataset(folder: Path, repo_id: str, private: bool = False, token: str | None = None,
                 endpoint: str | None = None) -> str:
    """Create (or reuse) the dataset repository and commit the folder's card and Parquet files; returns the
    commit's URL. `token`/`endpoint` default to huggingface_hub's (HF_TOKEN, `hf auth login`, HF_ENDPOINT)."""
    from huggingface_hub import HfApi

    parquet = RunLayout.dataset_format_in(folder, "parquet")
    if not RunLayout.dataset_card_in(folder).is_file() or not any(parquet.glob("*.parquet")):
        raise FileNotFoundError(f"{folder} has no card and Parquet files to push: run `xinstruct export` with "
                                "export.card true and parquet among export.formats")
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset", allow_patterns=PUSHED,
                               commit_message="xinstruct: dataset, card and statistics")
    return commit.commit_url
