"""Federated learning of one propensity model across shops whose events never leave them."""

from offline.federation.coordinator import FederationResult, federate
from offline.federation.privacy import GaussianAccountant
from offline.federation.tenant import TenantWorker

__all__ = ["FederationResult", "GaussianAccountant", "TenantWorker", "federate"]
