"""Old module paths, for runner/cli.py until its imports are rewritten to the new layout (issue 10, item 5).

runner/cli.py is split into runner/cli/ on another branch; whoever merges the two rewrites the CLI's imports
(`runner.dataset` → `runner.data.check`, …) and deletes this module, its import in runner/__init__.py and the
`__getattr__` lines of runner/images/, runner/jobs/ and runner/models/.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "runner.dataset": "runner.data.check", "runner.prepare": "runner.data.prepare", "runner.download": "runner.models.download",
    "runner.hosts": "runner.remote.hosts", "runner.ssh": "runner.remote.ssh", "runner.launch": "runner.jobs.launch",
    "runner.services": "runner.executors.services", "runner.doctor": "runner.executors.doctor",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        pass


def forward(new: str):
    """A package's `__getattr__` that finds old attributes (`images.find_image`) in the module they moved to."""
    return lambda name: getattr(importlib.import_module(new), name)


sys.meta_path.append(_Alias())
