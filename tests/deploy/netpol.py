"""A NetworkPolicy evaluator (networking.k8s.io/v1 as documented), so the chart's policies can be
checked without a network plugin that enforces them:

- a pod is isolated for a direction (Ingress, Egress) when a policy of its namespace selects it and
  lists that direction in policyTypes (omitted: Ingress, plus Egress when the policy has egress
  rules); a pod no policy isolates allows everything in that direction;
- traffic from A to B is allowed when A's egress allows it and B's ingress allows it; an isolated
  pod allows what any one rule of any one of its policies allows: a rule matches when one of its
  peers matches the other end (none listed: any) and one of its ports matches (none: any);
- a peer is an ipBlock (the other end's address in `cidr` and in no `except`), or selectors: a
  podSelector alone picks pods of the policy's namespace, a namespaceSelector alone every pod of the
  namespaces it picks, both together the pods they both pick;
- label selectors: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist), all of them;
  an empty selector picks everything.

Addresses outside the pod network (the API server) are `External`: they have no policies, and only
ipBlocks match them. Named ports are not supported (the chart uses numbers).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

INGRESS, EGRESS = "Ingress", "Egress"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ip: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class External:
    name: str
    ip: str

    def __str__(self) -> str:
        return f"{self.name} ({self.ip})"


Endpoint = Pod | External


def selects(selector: Mapping | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector picks an object with these labels."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In":
            ok = key in labels and labels[key] in values
        elif operator == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif operator == "Exists":
            ok = key in labels
        elif operator == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"unknown selector operator {operator}")
        if not ok:
            return False
    return True


def policy_types(policy: Mapping) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return [INGRESS] + ([EGRESS] if spec.get("egress") else [])


@dataclass
class Cluster:
    """Namespaces (name -> labels), pods and the NetworkPolicies in force."""

    namespaces: dict[str, dict[str, str]]
    pods: list[Pod]
    policies: list[dict] = field(default_factory=list)

    def namespace_labels(self, name: str) -> dict[str, str]:
        # The API server sets this label on every namespace.
        return {**self.namespaces.get(name, {}), "kubernetes.io/metadata.name": name}

    def pod(self, name: str) -> Pod:
        [found] = [p for p in self.pods if p.name == name]
        return found

    def policies_isolating(self, pod: Pod, direction: str) -> list[dict]:
        return [
            p
            for p in self.policies
            if p["metadata"].get("namespace", pod.namespace) == pod.namespace
            and selects(p["spec"].get("podSelector"), pod.labels)
            and direction in policy_types(p)
        ]

    def peer_matches(self, peer: Mapping, policy_namespace: str, other: Endpoint) -> bool:
        if "ipBlock" in peer:
            address = ipaddress.ip_address(other.ip)
            block = peer["ipBlock"]
            cidr = ipaddress.ip_network(block["cidr"])
            if address.version != cidr.version or address not in cidr:
                return False
            return not any(
                address in ipaddress.ip_network(e)
                for e in block.get("except") or []
                if ipaddress.ip_network(e).version == address.version
            )
        if not isinstance(other, Pod):
            return False
        if "namespaceSelector" in peer:
            if not selects(peer["namespaceSelector"], self.namespace_labels(other.namespace)):
                return False
        elif other.namespace != policy_namespace:
            return False
        return selects(peer.get("podSelector"), other.labels)

    @staticmethod
    def port_matches(ports: list | None, port: int, protocol: str) -> bool:
        if not ports:
            return True
        for entry in ports:
            if entry.get("protocol", "TCP") != protocol:
                continue
            wanted = entry.get("port")
            if wanted is None:
                return True
            if isinstance(wanted, str):
                raise ValueError(f"named port {wanted!r}: not supported by this evaluator")
            if wanted <= port <= entry.get("endPort", wanted):
                return True
        return False

    def allowed_by(self, pod: Pod, direction: str, other: Endpoint, port: int, protocol: str) -> bool:
        """Whether `pod`'s policies let traffic with `other` through in `direction`."""
        isolating = self.policies_isolating(pod, direction)
        if not isolating:
            return True
        key, peers_key = ("ingress", "from") if direction == INGRESS else ("egress", "to")
        for policy in isolating:
            namespace = policy["metadata"].get("namespace", pod.namespace)
            for rule in policy["spec"].get(key) or []:
                peers = rule.get(peers_key) or []
                if peers and not any(self.peer_matches(peer, namespace, other) for peer in peers):
                    continue
                if self.port_matches(rule.get("ports"), port, protocol):
                    return True
        return False

    def verdict(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> tuple[bool, bool]:
        """(source's egress allows it, destination's ingress allows it)."""
        egress = not isinstance(source, Pod) or self.allowed_by(source, EGRESS, destination, port, protocol)
        ingress = not isinstance(destination, Pod) or self.allowed_by(destination, INGRESS, source, port, protocol)
        return egress, ingress

    def allows(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
        return all(self.verdict(source, destination, port, protocol))
