import importlib
import pkgutil

import imgclf


def test_public_functions_survive_importing_every_module():
    # A submodule named like a public function would replace it on import.
    for module in pkgutil.walk_packages(imgclf.__path__, "imgclf."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    for name in ("scan", "audit", "train", "evaluate", "report", "list_models"):
        assert callable(getattr(imgclf, name)), name
