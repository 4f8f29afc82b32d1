"""Download the tokenizer folders the trainer loads from the hub at run time into /opt/hf-seed.

Arguments: REPO:SUBFOLDER ... (from the pins). No arguments: nothing to fetch.
"""

import sys

from huggingface_hub import snapshot_download

for spec in sys.argv[1:]:
    repo, subfolder = spec.split(":", 1)
    snapshot_download(repo, allow_patterns=[f"{subfolder}/*"], cache_dir="/opt/hf-seed/hub")
    print(f"tokenizer {repo}/{subfolder} cached")
