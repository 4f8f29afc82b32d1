"""Download the tokenizer folders the trainer loads from the hub at run time into /opt/hf-seed.

Arguments: REPO:SUBFOLDER@REVISION ... (from the pins). The trainer loads them without a revision, so
refs/main is pointed at the pinned snapshot: offline, from_pretrained then finds exactly that one.
"""

import sys
from pathlib import Path

from huggingface_hub import snapshot_download

CACHE = Path("/opt/hf-seed/hub")

for spec in sys.argv[1:]:
    repo_sub, revision = spec.rsplit("@", 1)
    repo, subfolder = repo_sub.split(":", 1)
    snapshot = Path(snapshot_download(repo, revision=revision, allow_patterns=[f"{subfolder}/*"], cache_dir=CACHE))
    refs = CACHE / f"models--{repo.replace('/', '--')}" / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(snapshot.name)
    print(f"tokenizer {repo}/{subfolder} cached at {snapshot.name}")
