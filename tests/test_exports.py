"""The public face of ``pymesh``: ``__all__``, and how public classes present themselves."""

from __future__ import annotations
import __future__

import copy
import pickle
import subprocess
import sys
import types

import pytest

import pymesh
import pymesh.errors

# Names CONTRACT.md §1 promises at the top level.
CONTRACT = ("ConfigError", "Mesh", "MeshError", "Workload")


def public_classes() -> list[type]:
    return [obj for name in pymesh.__all__ if isinstance(obj := getattr(pymesh, name), type)]


def test_all_is_sorted_and_unique() -> None:
    assert list(pymesh.__all__) == sorted(pymesh.__all__)
    assert len(set(pymesh.__all__)) == len(pymesh.__all__)


def test_every_name_in_all_exists() -> None:
    missing = [name for name in pymesh.__all__ if not hasattr(pymesh, name)]
    assert missing == []


def test_contract_names_are_exported() -> None:
    assert set(CONTRACT) <= set(pymesh.__all__)
    assert "__version__" in pymesh.__all__
    assert isinstance(pymesh.__version__, str)
    assert pymesh.__version__.count(".") >= 2


def test_inbound_names_are_exported() -> None:
    # CONTRACT.md section 3: pymesh.Caller, pymesh.serve, pymesh.asgi / pymesh.wsgi MeshMiddleware.
    assert {"Caller", "serve"} <= set(pymesh.__all__)
    assert callable(pymesh.serve)
    assert pymesh.asgi.MeshMiddleware.__name__ == "MeshMiddleware"
    assert pymesh.wsgi.MeshMiddleware.__name__ == "MeshMiddleware"
    with pytest.raises(AttributeError):
        pymesh.no_such_name  # noqa: B018


def test_caller_is_a_frozen_value() -> None:
    caller = pymesh.Caller("cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/b", "a",
                           "iss/sub", {"groups": ["x"]})
    assert repr(pymesh.Caller).endswith("'pymesh.Caller'>")
    with pytest.raises(AttributeError):
        caller.peer_principal = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        caller.claims["groups"] = []  # type: ignore[index]
    assert pymesh.Caller(None, None, None).claims == {}
    assert hash(caller) == hash(pymesh.Caller(caller.peer_principal, caller.spiffe_id, "a", "iss/sub", {}))


def test_route_decision_is_exported() -> None:
    assert "RouteDecision" in pymesh.__all__
    assert pymesh.RouteDecision.__module__ == "pymesh"


def test_nothing_public_is_missing_from_all() -> None:
    # Submodules (pymesh.mesh, pymesh.config, ...) and imports such as `annotations` and
    # `logging` are not API; any other public name in the package namespace must be listed.
    public = {
        name
        for name, value in vars(pymesh).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, __future__._Feature)
    }
    assert public - set(pymesh.__all__) == set()


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from pymesh import *", namespace)
    assert {k for k in namespace if k != "__builtins__"} == set(pymesh.__all__)


def test_public_classes_live_in_pymesh() -> None:
    classes = public_classes()
    assert {c.__name__ for c in classes} >= {"ConfigError", "Issue", "Mesh", "MeshError", "NoRouteError", "Workload"}
    for cls in classes:
        assert cls.__module__ == "pymesh", cls
        assert repr(cls) == f"<class 'pymesh.{cls.__qualname__}'>"
        assert getattr(pymesh, cls.__name__) is cls


def test_exceptions_are_a_family() -> None:
    errors = [c for c in public_classes() if issubclass(c, BaseException)]
    assert errors
    for cls in errors:
        assert issubclass(cls, pymesh.MeshError), cls
    assert issubclass(pymesh.ConfigError, ValueError)
    assert issubclass(pymesh.NoRouteError, LookupError)


def test_error_classes_of_pymesh_errors_are_exported() -> None:
    # Users catch these; pymesh.errors is where they are defined, the package is where they are found.
    defined = {
        name for name in pymesh.errors.__all__
        if isinstance(getattr(pymesh.errors, name), type) and issubclass(getattr(pymesh.errors, name), BaseException)
    }
    assert defined - set(pymesh.__all__) == set()


def test_instance_reprs_show_pymesh() -> None:
    w = pymesh.Workload(name="web", namespace="shop", labels={"app": "web"}, service_account="web-sa")
    assert repr(w) == "pymesh.Workload(shop/web [app=web] sa=web-sa)"
    mesh = pymesh.Mesh.from_yaml("", workload=w)
    assert repr(mesh).startswith("<pymesh.Mesh pymesh.Workload(shop/web")
    issue = pymesh.Issue(severity="error", message="bad", file="f.yaml", line=3, column=4)
    assert repr(issue).startswith("Issue(severity='error', message='bad'")  # the dataclass repr
    assert str(issue) == "f.yaml:3:4: bad"
    err = pymesh.ConfigError([issue])
    assert "f.yaml:3:4: bad" in str(err)
    assert type(err).__module__ == "pymesh"


@pytest.mark.parametrize(
    "value",
    [
        pymesh.Workload(name="web", namespace="shop", labels={"app": "web"}),
        pymesh.Issue(severity="warning", message="m", file="f", path="spec.x"),
        pymesh.Caller("cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/b", "a", None, {"k": "v"}),
    ],
    ids=["Workload", "Issue", "Caller"],
)
def test_public_values_pickle_by_their_pymesh_name(value: object) -> None:
    # __module__ is rewritten to "pymesh"; pickle must still find the class there.
    again = pickle.loads(pickle.dumps(value))
    assert type(again) is type(value)
    if isinstance(value, pymesh.Workload):
        assert isinstance(again, pymesh.Workload)
        assert (again.name, again.namespace, dict(again.labels)) == ("web", "shop", {"app": "web"})
    else:
        assert again == value


def test_workload_is_a_hashable_copyable_value() -> None:
    a = pymesh.Workload(name="web", namespace="shop", labels={"app": "web", "version": "v1"})
    b = pymesh.Workload(name="web", namespace="shop", labels={"version": "v1", "app": "web"})
    assert a == b
    assert hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert a != pymesh.Workload(name="web", namespace="shop", labels={"app": "web"})
    assert copy.deepcopy(a) == a
    assert copy.copy(a) == a
    with pytest.raises(TypeError):
        a.labels["app"] = "other"  # type: ignore[index]


def test_config_error_pickles() -> None:
    issue = pymesh.Issue(severity="error", message="bad", file="f.yaml")
    err = pickle.loads(pickle.dumps(pymesh.ConfigError([issue])))
    assert isinstance(err, pymesh.ConfigError)
    assert err.issues == (issue,)


def test_public_classes_have_docstrings() -> None:
    undocumented = [c.__name__ for c in public_classes() if not (c.__doc__ or "").strip()]
    assert undocumented == []


def test_import_is_quiet_and_light() -> None:
    # Importing pymesh prints nothing and pulls in no web framework or gRPC.
    code = (
        "import sys, pymesh; "
        "heavy = sorted(m for m in ('grpc', 'starlette', 'flask', 'fastapi', 'uvicorn', 'werkzeug') "
        "if m in sys.modules); "
        "print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert proc.stderr == ""


def test_middleware_modules_load_without_a_server() -> None:
    # pymesh.asgi / pymesh.wsgi are pure ASGI / WSGI: using them pulls in no server or framework.
    code = (
        "import sys, pymesh; pymesh.asgi.MeshMiddleware; pymesh.wsgi.MeshMiddleware; "
        "print(sorted(m for m in ('starlette', 'uvicorn', 'werkzeug') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
