"""The Istio 1.0/1.1 APIs current Istio removed and pymesh keeps reading.

authentication.istio.io/v1alpha1 (:mod:`.authn`), rbac.istio.io/v1alpha1 (:mod:`.rbac`)
and the Mixer policy kinds of config.istio.io/v1alpha2 (:mod:`.mixer`). The models are
plain data; turning them into the current security model is the snapshot's job.
"""

from __future__ import annotations

from pymesh.config.legacy import authn, mixer, rbac
from pymesh.config.resource import KindSpec

__all__ = ["KINDS", "authn", "mixer", "rbac"]

KINDS: tuple[KindSpec, ...] = authn.KINDS + rbac.KINDS + mixer.KINDS
