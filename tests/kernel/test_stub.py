"""_ringio.pyi says what the compiled library holds: every constant, every function with
its C signature mapped to Python types, every struct field Python reads or writes.

The stub is written by hand (cffi generates none), so it is checked here against the
library built from csrc/ringio_api.h; a change to the header that the stub misses fails.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import ringcast.ringio
from ringcast.ringio import _ringio
from ringcast.ringio._ringio import lib

STUB = Path(ringcast.ringio.__file__).with_name("_ringio.pyi")
ffi: Any = _ringio.ffi      # more of cffi than the stub types (typeof a function, addressof)

# C type (as cffi spells it) -> the stub's annotation, for parameters and for results.
PARAM = {
    "struct rio_loop *": "LoopHandle",
    "struct rio_params *": "Params",
    "struct rio_probe *": "ProbeOut",
    "int *": "IntOut",
    "uint32_t *": "ConnIds",
    "char *": "bytes",
}
RESULT = {
    "struct rio_loop *": "LoopHandle",
    "struct rio_stats *": "Stats",
    "struct rio_event *": "EventArray",
    "char *": "DataArray",
    "void": "None",
}


def _classes() -> dict[str, ast.ClassDef]:
    tree = ast.parse(STUB.read_text())
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _attributes(cls: ast.ClassDef) -> list[str]:
    """Annotated attributes and properties, in order."""
    names = []
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        elif isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list):
            names.append(node.name)
    return names


def _functions(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {node.name: node for node in cls.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("rio_")}


def _c_name(ctype: Any) -> str:
    return "int" if ctype.kind == "primitive" else str(ctype.cname)


def test_the_stub_lists_every_constant_and_function_of_the_library() -> None:
    stub = _classes()["_Lib"]
    constants = [n for n in _attributes(stub) if n.isupper()]
    assert sorted(constants) == sorted(n for n in dir(lib) if n.isupper())
    assert sorted(_functions(stub)) == sorted(n for n in dir(lib) if n.startswith("rio_"))


@pytest.mark.parametrize("name", sorted(n for n in dir(lib) if n.startswith("rio_")))
def test_each_function_has_its_c_signature(name: str) -> None:
    fn = _functions(_classes()["_Lib"])[name]
    ctype = ffi.typeof(ffi.addressof(lib, name))
    params = [a for a in fn.args.posonlyargs if a.arg != "self"]
    assert len(params) == len(ctype.args), f"{name}: {len(ctype.args)} C parameters"
    for param, carg in zip(params, ctype.args, strict=True):
        want = PARAM.get(_c_name(carg), "int")
        assert param.annotation is not None and ast.unparse(param.annotation) == want, (
            f"{name}({param.arg}): C {carg.cname} is {want} in Python")
    result = "void" if ctype.result.kind == "void" else _c_name(ctype.result)
    assert fn.returns is not None
    assert ast.unparse(fn.returns) == RESULT.get(result, "int"), f"{name} returns {result}"


@pytest.mark.parametrize(("stub_class", "struct"), [
    ("Params", "rio_params"), ("ProbeOut", "rio_probe"), ("Stats", "rio_stats"),
])
def test_each_struct_has_its_fields(stub_class: str, struct: str) -> None:
    fields = [name for name, _field in ffi.typeof(struct).fields]
    assert _attributes(_classes()[stub_class]) == fields
