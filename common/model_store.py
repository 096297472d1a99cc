"""The MLflow model store: bundles as run artifacts, versions in the model registry, the
``champion`` alias, and the reload message that points predictors at a stored bundle.

Reload URIs are always ``runs:/<run_id>/bundle/<file>`` inside the configured tracking server, so a
reload message cannot make a predictor download from anywhere else.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamfit.common import tags as tag
from streamfit.common.bundle import BUNDLE_FILE, ModelBundle, sha256_hex
from streamfit.common.errors import BundleError, ModelStoreError
from streamfit.common.messages import ModelReload
from streamfit.common.settings import Settings
from streamfit.common.tags import text

log = logging.getLogger(__name__)

CHAMPION = "champion"
URI_PATTERN = re.compile(r"runs:/[0-9a-zA-Z_-]{1,64}/bundle/" + re.escape(BUNDLE_FILE))  # whole URI: fullmatch


def bundle_uri(run_id: str) -> str:
    return f"runs:/{run_id}/bundle/{BUNDLE_FILE}"


# MLflow retries an unreachable server for minutes by default; a service should say so in seconds.
MLFLOW_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def _number(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class VersionRecord:
    """A registered version as streamfit tagged it (``common.tags``), typed: what status and the
    demo show."""

    version: str
    created: float  # seconds since the epoch
    metrics: dict[str, float]  # on the holdout that decided (``metric.<name>``)
    reason: str  # count, drift, manual, bootstrap; "" for a version made elsewhere
    candidate: str  # fast refit or search ("" for bootstrap)
    candidate_loss: float | None
    champion_loss: float | None  # the champion's loss on the same holdout, then
    decision: str  # the promotion decision, in words ("" for bootstrap)
    holdout: str  # which rows decided
    rejected: bool
    promoted_at: float | None

    @classmethod
    def of(cls, mv: Any) -> VersionRecord:
        tags: dict[str, str] = dict(mv.tags or {})
        return cls(
            version=str(mv.version), created=mv.creation_timestamp / 1000,
            metrics={k.removeprefix("metric."): number for k, v in tags.items()
                     if k.startswith("metric.") and (number := _number(v)) is not None},
            reason=tags.get(tag.REASON, ""), candidate=tags.get(tag.CANDIDATE, ""),
            candidate_loss=_number(tags.get(tag.CANDIDATE_LOSS)), champion_loss=_number(tags.get(tag.CHAMPION_LOSS)),
            decision=tags.get(tag.DECISION, ""), holdout=tags.get(tag.HOLDOUT, ""),
            rejected=tags.get(tag.REJECTED) == "true", promoted_at=_number(tags.get(tag.PROMOTED_AT)),
        )  # fmt: skip


class ModelStore:
    def __init__(self, settings: Settings) -> None:
        for key, value in MLFLOW_CLIENT_DEFAULTS.items():
            os.environ.setdefault(key, value)
        import mlflow
        from mlflow import MlflowClient

        self.settings = settings
        self.name = settings.model_name
        self.uri = settings.tracking_uri
        if self.uri.startswith("sqlite:"):
            settings.home.mkdir(parents=True, exist_ok=True)
        # MLflow's set_tracking_uri also exports MLFLOW_TRACKING_URI "for subprocesses". The settings read
        # that variable, so every Settings built later in this process, and every child started with its
        # environment, would silently use this store instead of its own home (a second replay of
        # benchmarks.recovery read the first one's deleted store). Keep MLflow's global, not the export.
        exported = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        if exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = exported
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def _fail(self, what: str, exc: Exception) -> ModelStoreError:
        return ModelStoreError(
            f"MLflow store at {self.uri} failed to {what}: {type(exc).__name__}: {str(exc)[:300]}; "
            "check that it runs, or set MLFLOW_TRACKING_URI / --mlflow-tracking-uri"
        )

    # --- experiments -------------------------------------------------------------------------
    def experiment_id(self) -> str:
        try:
            experiment = self.client.get_experiment_by_name(self.name)
            if experiment is not None:
                return str(experiment.experiment_id)
            location = None
            if self.uri.startswith(("sqlite:", "file:", "/")):
                self.settings.artifact_root.mkdir(parents=True, exist_ok=True)
                location = self.settings.artifact_root.as_uri()
            try:
                return str(self.client.create_experiment(self.name, artifact_location=location))
            except Exception:
                experiment = self.client.get_experiment_by_name(self.name)
                if experiment is None:
                    raise
                return str(experiment.experiment_id)
        except Exception as exc:
            raise self._fail("open the experiment", exc) from exc

    # --- bundles -------------------------------------------------------------------------------
    def save_bundle(self, run_id: str, bundle: ModelBundle) -> tuple[str, str]:
        """Store the bundle as an artifact of the run; returns (uri, sha256)."""
        data = bundle.to_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / BUNDLE_FILE
            path.write_bytes(data)
            try:
                self.client.log_artifact(run_id, str(path), artifact_path="bundle")
            except Exception as exc:
                raise self._fail("store the bundle", exc) from exc
        return bundle_uri(run_id), sha256_hex(data)

    def fetch_bundle(self, uri: str, sha256: str) -> ModelBundle:
        """Download, verify and load a bundle; refuses URIs outside this store."""
        if not URI_PATTERN.fullmatch(uri):  # not match(): "$" would let a trailing newline through
            raise BundleError(f"refusing bundle URI {uri!r}: not a bundle of this model store")
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=self.uri)
                data = Path(local).read_bytes()
            except Exception as exc:
                raise self._fail(f"download {uri}", exc) from exc
        return ModelBundle.from_bytes(data, sha256)

    # --- registry ------------------------------------------------------------------------------
    def register(self, run_id: str, uri: str, sha256: str, metrics: dict[str, float]) -> str:
        """A new registered version of the model for this bundle; returns the version."""
        try:
            try:
                self.client.get_registered_model(self.name)
            except Exception:  # noqa: BLE001 - absent: create it (another process may race us)
                try:
                    self.client.create_registered_model(self.name)
                except Exception:  # noqa: BLE001
                    self.client.get_registered_model(self.name)
            run = self.client.get_run(run_id)
            source = f"{run.info.artifact_uri}/bundle/{BUNDLE_FILE}"
            tags = {"sha256": sha256, "bundle_uri": uri, **{f"metric.{k}": repr(float(v)) for k, v in metrics.items()}}
            version = self.client.create_model_version(self.name, source=source, run_id=run_id, tags=tags)
            return str(version.version)
        except Exception as exc:
            raise self._fail("register a model version", exc) from exc

    def tag_version(self, version: str, tags: Mapping[str, Any]) -> None:
        """Set tags on a model version (values as text; ``common.tags`` names them)."""
        try:
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, version, key, text(value))
        except Exception as exc:
            raise self._fail(f"tag model version {version}", exc) from exc

    def set_champion(self, version: str) -> None:
        try:
            self.client.set_registered_model_alias(self.name, CHAMPION, version)
        except Exception as exc:
            raise self._fail(f"set the {CHAMPION} alias to version {version}", exc) from exc

    def champion_version(self) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(self.name, CHAMPION).version)
        except Exception as exc:
            text = str(exc)
            if "not found" in text.lower() or "RESOURCE_DOES_NOT_EXIST" in text or "does not exist" in text.lower():
                return None
            raise self._fail("read the champion alias", exc) from exc

    def versions(self) -> list[Any]:
        try:
            found = self.client.search_model_versions(f"name='{self.name}'")
        except Exception as exc:
            raise self._fail("list model versions", exc) from exc
        return sorted(found, key=lambda v: int(v.version))

    def records(self) -> list[VersionRecord]:
        """Every version of the model, oldest first, as typed records."""
        return [VersionRecord.of(mv) for mv in self.versions()]

    def reload_message(self, version: str) -> ModelReload:
        try:
            mv = self.client.get_model_version(self.name, version)
        except Exception as exc:
            raise self._fail(f"read model version {version}", exc) from exc
        tags = dict(mv.tags)
        if "sha256" not in tags or "bundle_uri" not in tags:
            raise ModelStoreError(f"model version {version} of {self.name} was not registered by streamfit")
        metrics = {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")}
        return ModelReload(
            model_name=self.name, version=version, uri=tags["bundle_uri"], sha256=tags["sha256"],
            metrics=metrics, published_at=time.time(),
        )  # fmt: skip
