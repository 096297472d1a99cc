"""What a model artifact and a reload message may make a predictor do: never execute code from the
artifact (no pickle, whatever the bundle holds), never fetch from outside the configured store."""

from __future__ import annotations

import ast
import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamfit.common.bundle import BUNDLE_FILE, ModelBundle, sha256_hex
from streamfit.common.errors import BundleError
from streamfit.common.model_store import ModelStore, bundle_uri
from streamfit.common.settings import load_settings
from tests.predictor.conftest import train

pytestmark = pytest.mark.security

REPO = Path(__file__).resolve().parents[2]
MARKER = Path(tempfile.gettempdir()) / f"streamfit-pwned-{os.getpid()}"


class Exploit:
    """Unpickling this creates MARKER: proof that code from the artifact ran."""

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (os.system, (f"touch {MARKER}",))


EXPLOIT = pickle.dumps(Exploit())


def bundle_with(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def members_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(load_settings(home=tmp_path_factory.mktemp("home"), model_name="artifacts"))


@pytest.fixture(autouse=True)
def _no_marker() -> Iterator[None]:
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "code from a model artifact was executed"


def test_a_bundle_made_of_pickles_is_refused_without_running_them(tmp_path: Path, store: ModelStore) -> None:
    good = members_of(train().to_bytes())
    for name in ("model.txt", "pipeline.json", "meta.json", "manifest.json"):
        forged = bundle_with({**good, name: EXPLOIT})
        with pytest.raises(BundleError):
            ModelBundle.from_bytes(forged, sha256_hex(forged))
    # Extra members (a pickled model beside the real one) are never read.
    extra = bundle_with({**good, "model.pkl": EXPLOIT, "python_model.pkl": EXPLOIT, "conda.yaml": b"x"})
    loaded = ModelBundle.from_bytes(extra, sha256_hex(extra))
    loaded.warm_up()

    # The same through a real MLflow store, as a predictor fetches it.
    run_id = store.client.create_run(store.experiment_id()).info.run_id
    path = tmp_path / BUNDLE_FILE
    forged = bundle_with({**good, "model.txt": EXPLOIT})
    path.write_bytes(forged)
    store.client.log_artifact(run_id, str(path), artifact_path="bundle")
    with pytest.raises(BundleError):
        store.fetch_bundle(bundle_uri(run_id), sha256_hex(forged))
    path.write_bytes(extra)  # the same run, its bundle replaced by one with pickles beside it
    store.client.log_artifact(run_id, str(path), artifact_path="bundle")
    store.fetch_bundle(bundle_uri(run_id), sha256_hex(extra)).warm_up()


@pytest.mark.parametrize(
    "uri",
    [
        "file://{tmp}/" + BUNDLE_FILE, "{tmp}/" + BUNDLE_FILE, "http://127.0.0.1:9/" + BUNDLE_FILE,
        "https://example.invalid/bundle/" + BUNDLE_FILE, "s3://bucket/bundle/" + BUNDLE_FILE,
        "mlflow-artifacts:/0/run/artifacts/bundle/" + BUNDLE_FILE, "models:/pickles/1", "models:/pickles@champion",
        "runs:/../../../../{tmp}/bundle/" + BUNDLE_FILE, "runs:/abc/bundle/../../../../../{tmp}/" + BUNDLE_FILE,
        "runs:/abc/bundle/" + BUNDLE_FILE + "\n", "runs:/abc/bundle/" + BUNDLE_FILE + "/../../x",
        "runs:/abc/other/" + BUNDLE_FILE, "runs:/abc/bundle/model.pkl", "runs:/a b/bundle/" + BUNDLE_FILE,
        "RUNS:/abc/bundle/" + BUNDLE_FILE, " runs:/abc/bundle/" + BUNDLE_FILE, "",
    ],
)  # fmt: skip
def test_a_reload_cannot_point_outside_the_model_store(uri: str, tmp_path: Path, store: ModelStore) -> None:
    data = train().to_bytes()
    (tmp_path / "bundle").mkdir()
    for place in (tmp_path / BUNDLE_FILE, tmp_path / "bundle" / BUNDLE_FILE):
        place.write_bytes(data)  # a valid bundle with the right sha256 waits there: it must not be fetched
    with pytest.raises(BundleError, match="refusing bundle URI"):
        store.fetch_bundle(uri.format(tmp=tmp_path), sha256_hex(data))


FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "marshal", "shelve"}
FORBIDDEN_CALLS = {"load_model", "pickle_load", "loads_pickle"}


SERVING_PATH = [
    *sorted((REPO / "predictor").glob("*.py")),
    *(REPO / "common" / name for name in ("bundle.py", "model_store.py", "pipeline.py")),
]


@pytest.mark.parametrize("path", SERVING_PATH, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_serving_path_imports_no_unpickler(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = {(node.module or "").split(".")[0]} | {alias.name for alias in node.names}
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_CALLS:
            names = {node.attr}
        else:
            continue
        assert not names & (FORBIDDEN_MODULES | FORBIDDEN_CALLS), f"{path.name}:{node.lineno} uses {names}"
