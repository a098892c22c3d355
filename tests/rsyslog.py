"""A real rsyslogd on loopback for the audit syslog tests, with UDP, plain TCP and TLS listeners.

Each listener has its own ruleset writing one JSON line per message to `<listener>.jsonl`:
the raw message as received and the RFC 5424 fields rsyslog parsed from it, so a test sees
exactly what arrived on which listener. TLS needs rsyslog's GnuTLS driver (Debian package
rsyslog-gnutls). rsyslogd's own messages go to `rsyslogd.out`, for debugging.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import json
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.services import free_port, missing_service, port_open, stop_process, wait_until

GTLS_DRIVER_GLOBS = ("/usr/lib/*/rsyslog/lmnsd_gtls.so", "/usr/lib/rsyslog/lmnsd_gtls.so")

_FIELDS = {
    "raw": "rawmsg",
    "pri": "pri",
    "timestamp": "timereported",
    "hostname": "hostname",
    "app_name": "app-name",
    "procid": "procid",
    "msgid": "msgid",
    "sd": "structured-data",
    "msg": "msg",
}

# inputs.timeout.shutdown: rsyslogd otherwise often waits 1 s for its input threads on SIGTERM.
_CONFIG = """\
global(workDirectory="{work}" net.enableDNS="off" maxMessageSize="64k"
       inputs.timeout.shutdown="100"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imudp")
module(load="imtcp")
template(name="fields" type="list" option.jsonf="on") {{
{properties}
}}
ruleset(name="udp") {{ action(type="omfile" file="{work}/udp.jsonl" template="fields") }}
ruleset(name="tcp") {{ action(type="omfile" file="{work}/tcp.jsonl" template="fields") }}
ruleset(name="tls") {{ action(type="omfile" file="{work}/tls.jsonl" template="fields") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
"""


@dataclass
class TestCA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path


def make_ca(name: str = "Bastion test CA") -> TestCA:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return TestCA(cert, key)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_server_cert(ca: TestCA, cert_path: Path, key_path: Path) -> None:
    """A server certificate for 127.0.0.1 (and localhost) issued by `ca`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _udp_bound(port: int) -> bool:
    # Read the kernel's table: probing with bind() could take the port before rsyslogd does.
    with open("/proc/net/udp") as table:
        return any(line.split()[1] == f"0100007F:{port:04X}" for line in list(table)[1:])


@dataclass
class RsyslogServer:
    workdir: Path
    binary: str
    ca_file: Path
    ports: dict[str, int]
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url(self, listener: str) -> str:
        return f"{listener}://127.0.0.1:{self.ports[listener]}"

    def start(self) -> None:
        """Start rsyslogd (again, on the same ports) and wait until every listener is up."""
        assert self.process is None
        with open(self.workdir / "rsyslogd.out", "ab") as out:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "-n",
                    "-f",
                    str(self.workdir / "rsyslog.conf"),
                    "-i",
                    str(self.workdir / "rsyslogd.pid"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(self._ready, timeout=15, what="rsyslogd")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            output = (self.workdir / "rsyslogd.out").read_text(errors="replace")
            raise RuntimeError(f"rsyslogd exited with {self.process.returncode}:\n{output}")
        return (
            port_open(self.ports["tcp"])
            and port_open(self.ports["tls"])
            and _udp_bound(self.ports["udp"])
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def received(self, listener: str) -> list[dict[str, str]]:
        """Every message rsyslogd wrote for `listener` so far, as the fields it parsed."""
        path = self.workdir / f"{listener}.jsonl"
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").split("\n")
        return [json.loads(line) for line in lines[:-1]]  # the last one is not complete yet

    def wait_received(self, listener: str, count: int, timeout: float = 10) -> list[dict[str, str]]:
        wait_until(
            lambda: len(self.received(listener)) >= count,
            timeout=timeout,
            what=f"{count} messages on {listener}",
        )
        return self.received(listener)


@contextlib.contextmanager
def run_rsyslog() -> Iterator[RsyslogServer]:
    binary = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")
    if binary is None:
        missing_service("rsyslogd (Debian package rsyslog)")
    if not any(glob.glob(pattern) for pattern in GTLS_DRIVER_GLOBS):
        missing_service("rsyslogd's TLS driver (Debian package rsyslog-gnutls)")
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="bastion-rsyslog-") as tmp:
        workdir = Path(tmp)
        ca = make_ca()
        ca_file = ca.write(workdir / "ca.pem")
        _write_server_cert(ca, workdir / "server.pem", workdir / "server.key")
        ports = {"udp": free_udp_port(), "tcp": free_port(), "tls": free_port()}
        properties = "\n".join(
            f'  property(outname="{out}" name="{name}" format="jsonf"'
            + (' dateFormat="rfc3339")' if name == "timereported" else ")")
            for out, name in _FIELDS.items()
        )
        (workdir / "rsyslog.conf").write_text(
            _CONFIG.format(
                work=workdir,
                ca=ca_file,
                cert=workdir / "server.pem",
                key=workdir / "server.key",
                properties=properties,
                **ports,
            )
        )
        server = RsyslogServer(workdir, binary, ca_file, ports)
        server.start()
        try:
            yield server
        finally:
            server.stop()
