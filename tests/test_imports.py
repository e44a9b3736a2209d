"""The public API: every name a package advertises in ``__all__`` imports, and is what it claims."""

import importlib
import subprocess
import sys
import types

import pytest

PACKAGES = [
    "stmgt",
    "stmgt.data",
    "stmgt.distributions",
    "stmgt.evaluation",
    "stmgt.models",
    "stmgt.nn",
    "stmgt.nn.blocks",
    "stmgt.nn.layers",
    "stmgt.training",
]

# Names in an ``__all__`` that are not classes or functions.
NOT_CALLABLE = {("stmgt", "__version__")}


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_import(package):
    module = importlib.import_module(package)
    names = module.__all__
    assert names, f"{package}.__all__ is empty"
    assert len(set(names)) == len(names), f"{package}.__all__ repeats a name"
    for name in names:
        obj = getattr(module, name)
        assert not isinstance(obj, types.ModuleType), f"{package}.{name} is a module, not what it advertises"
        if (package, name) not in NOT_CALLABLE:
            assert callable(obj), f"{package}.{name} is neither a class nor a function"
        exec(f"from {package} import {name}", {})
    assert set(names) <= set(dir(module))


@pytest.mark.parametrize("package", PACKAGES)
def test_star_import(package):
    namespace: dict = {}
    exec(f"from {package} import *", namespace)
    assert set(importlib.import_module(package).__all__) <= set(namespace)


def test_unknown_name_is_an_attribute_error():
    import stmgt.models
    import stmgt.nn

    for module in (stmgt, stmgt.models, stmgt.nn):
        with pytest.raises(AttributeError):
            module.no_such_name  # noqa: B018


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.slow
def test_documented_imports_in_a_fresh_process():
    """The imports of ``stmgt``'s docstring, after the submodule ``stmgt.training.fit`` was imported."""
    out = _run(
        "import stmgt.training.fit, inspect\n"
        "from stmgt.data import Panel, synthetic_city\n"
        "from stmgt.distributions import GaussianMixture\n"
        "from stmgt.models import STMGT, build_model\n"
        "from stmgt.training import fit\n"
        "import stmgt\n"
        "print(inspect.isfunction(fit), stmgt.fit is fit, inspect.isclass(STMGT), inspect.isclass(GaussianMixture))\n"
    )
    assert out == "True True True True"


def test_import_stmgt_is_light():
    """``import stmgt`` imports neither torch nor Lightning; the exported names load on first use."""
    out = _run("import sys, stmgt\nprint('torch' in sys.modules, 'lightning' in sys.modules)")
    assert out == "False False"
