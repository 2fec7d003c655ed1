"""Declarative descriptions of what the tool reads, checked by ``migrate/sources/validate.py``.

A description is a small tree of ``Str``/``Int``/``Bool``/``IntOrStr`` scalars, ``ListOf``,
``MapOf`` (string keys) and ``Fields`` (named fields, some required). What a ``Fields`` does with
a field it does not describe is its ``unknown`` policy:

- MetalLB kinds are described field for field from their CRDs' ``openAPIV3Schema``
  (``config/crd/bases/metallb.io_*.yaml`` in metallb/metallb; types, required fields, bounds and
  enums), so a field we do not know comes from a newer MetalLB (or is a typo) and is WARNed
  about, never dropped silently. ``tests/test_input_schemas.py`` holds these descriptions to
  the CRDs.
- Kubernetes, Cilium and GitOps kinds describe only the fields the tool reads; the rest is
  passed over (``IGNORE``).
- MetalLB's legacy configuration (≤ v0.12) was parsed strictly (``yaml.UnmarshalStrict`` in
  ``internal/config/config.go`` @v0.12.1): an unknown key is refused (``REFUSE``).

As in the API server, ``null`` for an optional field means the field is absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum


class Unknown(Enum):
    """What a ``Fields`` does with a field it does not describe."""

    IGNORE = "ignore"
    WARN = "warn"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Scalar:
    """A string, integer, boolean or number; integers with optional bounds, strings with an
    optional enum or format (``ip``, ``cidr``: parsed by ``ipaddress``)."""

    type: str
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] = ()
    format: str | None = None


@dataclass(frozen=True)
class IntOrStr:
    """``x-kubernetes-int-or-string`` (a Service's ``targetPort``)."""


@dataclass(frozen=True)
class StrOrMap:
    """A string or a mapping (Helm's ``configInline``: YAML text or the values themselves)."""


@dataclass(frozen=True)
class Anything:
    """Passed over whatever it holds."""


@dataclass(frozen=True)
class Maybe:
    """``null`` or ``spec`` (where null means something, as in a plan's context)."""

    spec: Spec


@dataclass(frozen=True)
class ListOf:
    """A list whose every item is ``items``."""

    items: Spec


@dataclass(frozen=True)
class MapOf:
    """A mapping of string keys to ``values`` (labels, annotations, ConfigMap data)."""

    values: Spec


@dataclass(frozen=True)
class Fields:
    """A mapping of named fields."""

    fields: Mapping[str, Spec]
    required: frozenset[str] = field(default_factory=frozenset)
    unknown: Unknown = Unknown.IGNORE
    one_of_required: tuple[str, ...] = ()
    """At least one of these fields must be set (a Cilium pool block: ``cidr`` or ``start``)."""


Spec = Scalar | IntOrStr | StrOrMap | Anything | Maybe | ListOf | MapOf | Fields

STR = Scalar("string")
INT = Scalar("integer")
BOOL = Scalar("boolean")
ANY = Anything()
STRINGS = ListOf(STR)
STRING_MAP = MapOf(STR)
IP = Scalar("string", format="ip")
CIDR = Scalar("string", format="cidr")
ASN = Scalar("integer", minimum=0, maximum=4294967295)
INT32 = Scalar("integer", minimum=-2147483648, maximum=2147483647)
WARN, REFUSE = Unknown.WARN, Unknown.REFUSE


def fields(unknown: Unknown = Unknown.IGNORE, required: tuple[str, ...] = (),
           **described: Spec) -> Fields:
    """A ``Fields`` from keyword arguments (names that are not identifiers: ``Fields`` itself)."""
    return Fields(described, frozenset(required), unknown)


OBJECT_META = fields(
    required=("name",),
    name=STR, namespace=STR, generateName=STR, labels=STRING_MAP, annotations=STRING_MAP,
    resourceVersion=STR, uid=STR,
    ownerReferences=ListOf(fields(apiVersion=STR, kind=STR, name=STR)),
)
"""The parts of ``metadata`` the tool reads, for every kind it reads."""


def _kind(unknown: Unknown, required: tuple[str, ...] = (), **top: Spec) -> Fields:
    """A top-level object: apiVersion, kind, metadata and a ``spec`` mapping (plans compare
    the specs of what they read), then ``top``."""
    return Fields({"apiVersion": STR, "kind": STR, "metadata": OBJECT_META, "spec": fields(),
                   **top}, frozenset(("metadata", *required)), unknown)


# -- MetalLB, from its CRDs (metallb/metallb config/crd/bases/, the commit of [M1]) -----------
def _selector(unknown: Unknown, *, values_required: bool = False) -> Fields:
    """metav1.LabelSelector as the CRDs spell it."""
    requirement = fields(unknown, ("key", "operator", *(("values",) if values_required else ())),
                         key=STR, operator=STR, values=STRINGS)
    return fields(unknown, matchLabels=STRING_MAP, matchExpressions=ListOf(requirement))


SELECTOR = _selector(WARN)
SELECTORS = ListOf(SELECTOR)
_STATUS = ANY  # status fields are written by MetalLB and never read by the tool

IP_ADDRESS_POOL = _kind(
    WARN, ("spec",),
    spec=fields(
        WARN, ("addresses",),
        addresses=STRINGS, autoAssign=BOOL, avoidBuggyIPs=BOOL,
        serviceAllocation=fields(
            WARN, priority=INT, namespaces=STRINGS, namespaceSelectors=SELECTORS,
            serviceSelectors=SELECTORS,
        ),
    ),
    status=_STATUS,
)
L2_ADVERTISEMENT = _kind(
    WARN,
    spec=fields(
        WARN,
        ipAddressPools=STRINGS, ipAddressPoolSelectors=SELECTORS, nodeSelectors=SELECTORS,
        interfaces=STRINGS, serviceSelectors=SELECTORS,
        preferredNodeSelectors=ListOf(fields(
            WARN, ("preference", "weight"),
            preference=SELECTOR, weight=Scalar("integer", minimum=1, maximum=100),
        )),
    ),
    status=_STATUS,
)
BGP_ADVERTISEMENT = _kind(
    WARN,
    spec=fields(
        WARN,
        aggregationLength=Scalar("integer", minimum=1, maximum=2147483647),
        aggregationLengthV6=INT32, localPref=INT32, communities=STRINGS,
        ipAddressPools=STRINGS, ipAddressPoolSelectors=SELECTORS, nodeSelectors=SELECTORS,
        peers=STRINGS, serviceSelectors=SELECTORS,
    ),
    status=_STATUS,
)
_PEER_COMMON: dict[str, Spec] = {
    "myASN": ASN, "peerASN": ASN, "peerAddress": STR, "sourceAddress": STR, "routerID": STR,
    "holdTime": STR, "keepaliveTime": STR, "password": STR, "bfdProfile": STR,
    "ebgpMultiHop": BOOL,
}
_PEER_V1BETA2_ONLY: dict[str, Spec] = {
    "connectTime": STR, "disableMP": BOOL, "dualStackAddressFamily": BOOL,
    "dynamicASN": Scalar("string", enum=("internal", "external")),
    "enableGracefulRestart": BOOL, "interface": STR, "vrf": STR,
    "localASN": Scalar("integer", minimum=1, maximum=4294967295),
    "passwordSecret": fields(WARN, name=STR, namespace=STR),
}
BGP_PEER_V1BETA1 = _kind(
    WARN,
    spec=Fields({
        **_PEER_COMMON,
        # v1beta2's own fields, written on a v1beta1 peer: the API server drops them, and the
        # BGP translation says so field by field (migrate/model/bgp.py V1BETA2_ONLY).
        **_PEER_V1BETA2_ONLY,
        "peerPort": Scalar("integer", minimum=0, maximum=16384),
        "nodeSelectors": ListOf(_selector(WARN, values_required=True)),
    }, frozenset(("myASN", "peerASN", "peerAddress")), WARN),
    status=_STATUS,
)
BGP_PEER_V1BETA2 = _kind(
    WARN,
    spec=Fields({
        **_PEER_COMMON,
        # The CRD says 1-16384, but a v1beta1 peer stored with 0 ("the default port") is
        # converted field for field (api/v1beta1/bgppeer_conversion.go), and the API server
        # does not validate a converted object: read live at v1beta2 it still says 0.
        "peerPort": Scalar("integer", minimum=0, maximum=16384),
        "nodeSelectors": SELECTORS,
        **_PEER_V1BETA2_ONLY,
    }, frozenset(("myASN",)), WARN),
    status=_STATUS,
)
_INTERVAL = Scalar("integer", minimum=10, maximum=60000)
BFD_PROFILE = _kind(
    WARN,
    spec=fields(
        WARN,
        receiveInterval=_INTERVAL, transmitInterval=_INTERVAL, echoInterval=_INTERVAL,
        detectMultiplier=Scalar("integer", minimum=2, maximum=255), echoMode=BOOL,
        passiveMode=BOOL, minimumTtl=Scalar("integer", minimum=1, maximum=254),
    ),
    status=_STATUS,
)
COMMUNITY = _kind(
    WARN,
    spec=fields(WARN, communities=ListOf(fields(WARN, name=STR, value=STR))),
    status=_STATUS,
)
ADDRESS_POOL = _kind(  # MetalLB 0.13 to 0.14.2 (config/crd/bases @v0.13.12)
    WARN, ("spec",),
    spec=fields(
        WARN, ("addresses", "protocol"),
        addresses=STRINGS, autoAssign=BOOL,
        protocol=Scalar("string", enum=("layer2", "bgp")),
        bgpAdvertisements=ListOf(fields(
            WARN, aggregationLength=Scalar("integer", minimum=1, maximum=2147483647),
            aggregationLengthV6=INT32, localPref=INT32, communities=STRINGS,
        )),
    ),
    status=_STATUS,
)

METALLB: dict[tuple[str, str], Fields] = {
    ("IPAddressPool", "v1beta1"): IP_ADDRESS_POOL,
    ("L2Advertisement", "v1beta1"): L2_ADVERTISEMENT,
    ("BGPAdvertisement", "v1beta1"): BGP_ADVERTISEMENT,
    ("BGPPeer", "v1beta1"): BGP_PEER_V1BETA1,
    ("BGPPeer", "v1beta2"): BGP_PEER_V1BETA2,
    ("BFDProfile", "v1beta1"): BFD_PROFILE,
    ("Community", "v1beta1"): COMMUNITY,
    ("AddressPool", "v1alpha1"): ADDRESS_POOL,
    ("AddressPool", "v1beta1"): ADDRESS_POOL,
}
"""(kind, version) → description; the status kinds are not read, so not described."""

# -- Kubernetes, Cilium and GitOps kinds: the fields the tool reads ---------------------------
_CONTAINER = fields(
    name=STR, image=STR, command=STRINGS, args=STRINGS,
    env=ListOf(fields(name=STR, value=STR)),
)
_POD_SPEC = fields(
    containers=ListOf(_CONTAINER), initContainers=ListOf(_CONTAINER),
    nodeSelector=STRING_MAP, nodeName=STR, hostNetwork=BOOL,
)
_WORKLOAD = _kind(
    Unknown.IGNORE,
    spec=fields(replicas=INT, template=fields(metadata=fields(labels=STRING_MAP,
                                                              annotations=STRING_MAP),
                                              spec=_POD_SPEC)),
)
_PLAIN_SELECTOR = fields(
    matchLabels=STRING_MAP,
    matchExpressions=ListOf(fields(required=("key", "operator"), key=STR, operator=STR,
                                   values=STRINGS)),
)
SERVICE = _kind(
    Unknown.IGNORE,
    spec=fields(
        type=STR, loadBalancerClass=STR, loadBalancerIP=STR, externalTrafficPolicy=STR,
        selector=STRING_MAP, ipFamilies=STRINGS, ipFamilyPolicy=STR, clusterIP=STR,
        clusterIPs=STRINGS, externalIPs=STRINGS, allocateLoadBalancerNodePorts=BOOL,
        ports=ListOf(fields(required=("port",), port=INT, protocol=STR, name=STR,
                            targetPort=IntOrStr(), nodePort=INT)),
    ),
    status=fields(loadBalancer=fields(ingress=ListOf(fields(ip=STR, hostname=STR,
                                                            ipMode=STR)))),
)
NODE = _kind(
    Unknown.IGNORE,
    status=fields(addresses=ListOf(fields(type=STR, address=STR)),
                  nodeInfo=fields(osImage=STR, kubeletVersion=STR)),
)
KUBERNETES: dict[tuple[str, str], Fields] = {
    ("", "Service"): SERVICE,
    ("", "Node"): NODE,
    ("", "ConfigMap"): _kind(Unknown.IGNORE, data=STRING_MAP, binaryData=STRING_MAP),
    ("", "Pod"): _kind(Unknown.IGNORE, spec=_POD_SPEC),
    ("apps", "Deployment"): _WORKLOAD,
    ("apps", "DaemonSet"): _WORKLOAD,
    ("coordination.k8s.io", "Lease"): _kind(
        Unknown.IGNORE,
        spec=fields(holderIdentity=STR, leaseDurationSeconds=INT, acquireTime=STR,
                    renewTime=STR, leaseTransitions=INT),
    ),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): _kind(
        Unknown.IGNORE,
        webhooks=ListOf(fields(
            name=STR, failurePolicy=STR,
            clientConfig=fields(service=fields(name=STR, namespace=STR)),
        )),
    ),
    ("cilium.io", "CiliumNode"): _kind(Unknown.IGNORE),
    ("cilium.io", "CiliumLoadBalancerIPPool"): _kind(
        Unknown.IGNORE,
        spec=fields(
            blocks=ListOf(Fields({"cidr": CIDR, "start": IP, "stop": IP},
                                 one_of_required=("cidr", "start"))),
            serviceSelector=_PLAIN_SELECTOR,
            disabled=BOOL, allowFirstLastIPs=STR,
        ),
    ),
    ("cilium.io", "CiliumL2AnnouncementPolicy"): _kind(
        Unknown.IGNORE,
        spec=fields(serviceSelector=_PLAIN_SELECTOR, nodeSelector=_PLAIN_SELECTOR,
                    interfaces=STRINGS, loadBalancerIPs=BOOL, externalIPs=BOOL),
    ),
    ("helm.toolkit.fluxcd.io", "HelmRelease"): _kind(
        Unknown.IGNORE,
        spec=fields(values=ANY, suspend=BOOL, targetNamespace=STR,
                    chart=fields(spec=fields(chart=STR))),
    ),
    ("kustomize.toolkit.fluxcd.io", "Kustomization"): _kind(
        Unknown.IGNORE, spec=fields(suspend=BOOL),
    ),
    # frr-k8s objects MetalLB merges into its BGP configuration (reported as lost by the BGP
    # translation: only the node selector is read).
    ("frrk8s.metallb.io", "FRRConfiguration"): _kind(
        Unknown.IGNORE, spec=fields(nodeSelector=_PLAIN_SELECTOR),
    ),
    ("argoproj.io", "Application"): _kind(
        Unknown.IGNORE,
        spec=fields(syncPolicy=fields(automated=ANY), source=fields(chart=STR),
                    sources=ListOf(fields(chart=STR))),
    ),
}
"""(API group, kind) → description, whatever the version (the readers match kinds so)."""

# -- MetalLB's legacy configuration (internal/config/config.go @v0.12.1) ----------------------
UINT32 = Scalar("integer", minimum=0, maximum=4294967295)
LEGACY_CONFIG = Fields({
    "address-pools": ListOf(Fields({
        "name": STR, "protocol": Scalar("string", enum=("layer2", "bgp")), "addresses": STRINGS,
        "auto-assign": BOOL, "avoid-buggy-ips": BOOL,
        "bgp-advertisements": ListOf(Fields({
            "aggregation-length": INT, "aggregation-length-v6": INT, "localpref": UINT32,
            "communities": STRINGS,
        }, unknown=REFUSE)),
    }, frozenset(("name", "protocol", "addresses")), REFUSE)),
    "peers": ListOf(Fields({
        "peer-address": STR, "peer-asn": UINT32, "my-asn": UINT32,
        "peer-port": Scalar("integer", minimum=0, maximum=65535), "source-address": STR,
        "router-id": STR, "hold-time": STR, "keepalive-time": STR, "password": STR,
        "bfd-profile": STR, "ebgp-multihop": BOOL,
        "node-selectors": ListOf(Fields({
            "match-labels": STRING_MAP,
            "match-expressions": ListOf(Fields({"key": STR, "operator": STR, "values": STRINGS},
                                               frozenset(("key", "operator")), REFUSE)),
        }, unknown=REFUSE)),
    }, frozenset(("peer-address", "peer-asn", "my-asn")), REFUSE)),
    "bgp-communities": STRING_MAP,
    "bfd-profiles": ListOf(Fields({
        "name": STR, "receive-interval": UINT32, "transmit-interval": UINT32,
        "detect-multiplier": UINT32, "echo-interval": UINT32, "echo-mode": BOOL,
        "passive-mode": BOOL, "minimum-ttl": UINT32,
    }, frozenset(("name",)), REFUSE)),
}, unknown=REFUSE)
"""The ``config`` value of MetalLB's legacy ConfigMap, key for key."""

# -- kubeconfig (client-go's clientcmd/api/v1 types, the fields the official client reads) ----
_NAMED = ("name",)
KUBECONFIG = Fields({
    "apiVersion": STR, "kind": STR, "current-context": STR, "preferences": ANY,
    "clusters": ListOf(fields(required=("name", "cluster"), name=STR, cluster=Fields({
        "server": STR, "certificate-authority": STR, "certificate-authority-data": STR,
        "insecure-skip-tls-verify": BOOL, "tls-server-name": STR, "proxy-url": STR,
    }, frozenset(("server",))))),
    "contexts": ListOf(fields(required=("name", "context"), name=STR, context=fields(
        required=("cluster",), cluster=STR, user=STR, namespace=STR))),
    "users": ListOf(fields(required=_NAMED, name=STR, user=Maybe(Fields({
        "token": STR, "tokenFile": STR, "username": STR, "password": STR,
        "client-certificate": STR, "client-certificate-data": STR, "client-key": STR,
        "client-key-data": STR,
        "exec": fields(command=STR, apiVersion=STR, args=Maybe(STRINGS),
                       env=Maybe(ListOf(fields(name=STR, value=STR)))),
        "auth-provider": fields(name=STR, config=STRING_MAP),
    })))),
})
"""A kubeconfig file, as far as the official client reads it."""
