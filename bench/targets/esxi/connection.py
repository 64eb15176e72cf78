"""A verified session with an ESXi host or a vCenter (pyvmomi), and the inventory objects a deployment needs.

TLS is verified by default: against the system's CAs, a `ca_file`, or a pinned certificate
`thumbprint` (SHA-1 or SHA-256, as ESXi and vCenter show them; pyvmomi's own thumbprint check does not
cover its version discovery, so the pinned certificate is made the context's only trust anchor).
An unverified session only with `insecure = true`. pyvmomi turns verification off by itself for a
localhost server when given no SSL context, so a context is always passed. The password is read from
the environment variable the scenario names and is never kept beyond the login.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from dataclasses import dataclass

from bench.common.errors import UserError
from bench.scenario.targets import EsxiSpec

API_TIMEOUT = 60  # seconds for one vSphere API request


def vim():
    """pyVmomi's vim namespace; a one-line error when pyvmomi is not installed (the `esxi` extra)."""
    try:
        from pyVmomi import vim as namespace
    except ImportError:
        raise UserError("the esxi target needs pyvmomi: pip install 'pacsbench[esxi]'") from None
    return namespace


def ssl_context(spec: EsxiSpec) -> ssl.SSLContext:
    """The TLS context the scenario asks for: verifying (system CAs, ca_file or the pinned certificate), or none at
    all (insecure)."""
    if spec.thumbprint:
        return pinned_context(spec)
    if spec.insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=spec.ca_file) if spec.ca_file else ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"esxi target: ca_file {spec.ca_file}: {exc}") from None


def pinned_context(spec: EsxiSpec) -> ssl.SSLContext:
    """A context that trusts exactly the certificate whose digest is the pinned thumbprint.

    The host's certificate is fetched, its digest compared with the pin, and then that certificate alone is
    the trust anchor of every connection (the session's, the disk uploads', the sampler's): a host that
    later shows another certificate fails verification. The pin replaces the name check."""
    wanted = (spec.thumbprint or "").replace(":", "").lower()
    try:
        pem = ssl.get_server_certificate((spec.host, spec.api_port), timeout=API_TIMEOUT)
    except OSError as exc:
        raise UserError(f"esxi target: cannot reach {spec.host}:{spec.api_port}: {exc}") from None
    der = ssl.PEM_cert_to_DER_cert(pem)
    if hashlib.new("sha1" if len(wanted) == 40 else "sha256", der).hexdigest() != wanted:
        raise UserError(
            f"esxi target: the certificate of {spec.host}:{spec.api_port} does not match the pinned thumbprint"
        )
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the host's own certificate is the anchor, CA-signed or not
    return context


def trust_words(spec: EsxiSpec) -> str:
    """How the host's certificate was trusted, for run.json and the report."""
    if spec.insecure:
        return "NOT VERIFIED (insecure = true)"
    if spec.thumbprint:
        return f"pinned thumbprint {spec.thumbprint}"
    return f"verified against {spec.ca_file}" if spec.ca_file else "verified against the system's CAs"


def password(spec: EsxiSpec) -> str:
    value = os.environ.get(spec.password_env)
    if not value:
        raise UserError(f"esxi target: set the password of {spec.user} in the environment variable {spec.password_env}")
    return value


@dataclass
class Session:
    """A logged-in service instance and its content; `close` logs out."""

    si: object
    spec: EsxiSpec
    cached: object | None = None

    @property
    def content(self):
        """The service content (fetched once: a round trip each time otherwise)."""
        if self.cached is None:
            self.cached = self.si.RetrieveContent()
        return self.cached

    def close(self) -> None:
        from pyVim.connect import Disconnect

        try:
            Disconnect(self.si)
        except Exception:  # noqa: BLE001 (a session that is already gone needs no logout)
            pass


def connect(spec: EsxiSpec) -> Session:
    """Log in; every failure (login, certificate, address) becomes one line naming the host."""
    vim()
    from pyVim.connect import SmartConnect

    where = f"{spec.host}:{spec.api_port}"
    try:
        si = SmartConnect(
            host=spec.host,
            port=spec.api_port,
            user=spec.user,
            pwd=password(spec),
            sslContext=ssl_context(spec),
            httpConnectionTimeout=API_TIMEOUT,
        )
    except UserError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise UserError(
            f"esxi target: the certificate of {where} cannot be verified ({exc.verify_message}): give its CA "
            "in 'ca_file' or pin its 'thumbprint' (insecure = true turns verification off)"
        ) from None
    except Exception as exc:  # noqa: BLE001 (pyvmomi raises its own vim faults, socket and SSL errors)
        raise UserError(f"esxi target: cannot log in to {where} as {spec.user}: {fault_text(exc)}") from None
    return Session(si, spec)


def fault_text(exc: BaseException | object) -> str:
    """A vim fault, a LocalizedMethodFault or a socket error in one line ("InvalidLogin: Cannot complete login ...")."""
    exc = getattr(exc, "fault", None) or exc  # a task's or a lease's LocalizedMethodFault holds the fault
    name = type(exc).__name__.rsplit(".", 1)[-1]
    if "ThumbprintMismatch" in name:
        return "its certificate does not match the pinned thumbprint"
    if hasattr(exc, "_wsdlName") or name in ("MethodFault", "RuntimeFault"):  # a vim fault: its repr is a tree
        message = getattr(exc, "msg", None) or ""
    else:
        message = str(exc)
    first = message.strip().splitlines()[0] if message.strip() else ""
    return f"{name}: {first}" if first and name not in first else first or name


def all_of(session: Session, kind, root=None) -> list:
    """Every inventory object of `kind` (vim.Datastore ...) under `root` (default: the whole inventory)."""
    content = session.content
    view = content.viewManager.CreateContainerView(root or content.rootFolder, [kind], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def named(session: Session, kind, name: str, what: str, root=None):
    """The one object of `kind` called `name`; a one-line error listing the names there are."""
    found = all_of(session, kind, root)
    for obj in found:
        if obj.name == name:
            return obj
    known = ", ".join(sorted(o.name for o in found)) or "none"
    raise UserError(f"esxi target: no {what} {name!r} on {session.spec.host} (there: {known})")


@dataclass
class Placement:
    """Where the VM goes: datacenter (its VM folder), datastore, network, resource pool and host."""

    datacenter: object
    datastore: object
    network: object
    pool: object
    host: object | None


def placement(session: Session) -> Placement:
    """Find every object the scenario names before anything is created: a wrong name leaves nothing behind."""
    v, spec = vim(), session.spec
    datacenters = all_of(session, v.Datacenter)
    if spec.datacenter:
        datacenter = named(session, v.Datacenter, spec.datacenter, "datacenter")
    elif datacenters:
        datacenter = datacenters[0]
    else:
        raise UserError(f"esxi target: {spec.host} has no datacenter")
    datastore = named(session, v.Datastore, spec.datastore, "datastore", datacenter)
    network = named(session, v.Network, spec.network, "network", datacenter)
    host = named(session, v.HostSystem, spec.esxi_host, "host", datacenter) if spec.esxi_host else None
    compute = named(session, v.ClusterComputeResource, spec.cluster, "cluster", datacenter) if spec.cluster else None
    if spec.resource_pool:
        pool = named(session, v.ResourcePool, spec.resource_pool, "resource pool", compute or datacenter)
    elif compute is not None:
        pool = compute.resourcePool
    elif host is not None:
        pool = host.parent.resourcePool
    else:
        pool = next(iter(all_of(session, v.ComputeResource, datacenter)), None)
        if pool is None:
            raise UserError(f"esxi target: {spec.host} has no host to deploy on")
        pool = pool.resourcePool
    if host is not None and datastore not in host.datastore:
        raise UserError(f"esxi target: host {spec.esxi_host} cannot reach datastore {spec.datastore}")
    return Placement(datacenter, datastore, network, pool, host)


def server_facts(session: Session, place: Placement) -> dict:
    """The product (about.fullName, build), the host's CPU and the datastore's type, for run.json."""
    about = session.content.about
    host = place.host or next(iter(place.pool.owner.host), None)
    hardware = host.summary.hardware if host else None
    facts = {
        "product": about.fullName,
        "product_build": about.build,
        "api_type": about.apiType,
        "esxi_host": host.name if host else None,
        "host_cpu_model": hardware.cpuModel if hardware else None,
        "host_cpu_sockets": hardware.numCpuPkgs if hardware else None,
        "host_cpu_cores": hardware.numCpuCores if hardware else None,
        "host_cpu_threads": hardware.numCpuThreads if hardware else None,
        "datastore": place.datastore.name,
        "datastore_type": place.datastore.summary.type,
        "network": place.network.name,
        "simulator": is_simulator(session),
    }
    return facts


def is_simulator(session: Session) -> bool:
    """govmomi's simulator (vcsim) names its own URL in the option manager; a real ESXi or vCenter does not."""
    try:
        return bool(session.content.setting.QueryOptions("vcsim.server.url"))
    except Exception:  # noqa: BLE001 (InvalidName on a real server: the option does not exist)
        return False
