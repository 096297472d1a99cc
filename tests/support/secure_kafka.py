"""Apache Kafka brokers that require TLS, or SASL (SCRAM-SHA-512) over TLS, with certificates made
by the test: a throw-away CA signs the broker's certificate (for 127.0.0.1 and localhost) and a
client certificate (for mutual TLS). The broker reads PEM files directly (``ssl.keystore.type=PEM``),
so no JKS and no keytool.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from streamfit.kafka_server import KafkaServer, free_port

SCRAM = "SCRAM-SHA-512"
BROKER_USER = "broker"


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA certificate, PEM: what clients and the broker trust
    broker: Path  # the broker's private key and certificate chain, one PEM file
    client_cert: Path
    client_key: Path
    client_key_password: str


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(directory: Path, client_key_password: str = "client-key-secret") -> Certificates:
    """A CA, a broker certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("streamfit test CA")).issuer_name(_name("streamfit test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip

    def leaf(common_name: str, sans: list[Any]) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )  # fmt: skip
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    broker_key, broker_cert = leaf(
        "localhost", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    client_key, client_cert = leaf("streamfit-client", [])
    pem = serialization.Encoding.PEM
    ca = directory / "ca.pem"
    ca.write_bytes(ca_cert.public_bytes(pem))
    broker = directory / "broker.pem"  # PKCS#8 key then the chain: what ssl.keystore.type=PEM reads
    broker.write_bytes(
        broker_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + broker_cert.public_bytes(pem)
        + ca_cert.public_bytes(pem)
    )
    client_cert_path, client_key_path = directory / "client.pem", directory / "client-key.pem"
    client_cert_path.write_bytes(client_cert.public_bytes(pem))
    client_key_path.write_bytes(
        client_key.private_bytes(
            pem,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(client_key_password.encode()),
        )
    )
    for path in (broker, client_key_path):
        path.chmod(0o600)
    return Certificates(ca, broker, client_cert_path, client_key_path, client_key_password)


def secure_kafka(
    kind: Literal["SSL", "SASL_SSL"],
    certificates: Certificates,
    workdir: Path,
    users: dict[str, str] | None = None,
    broker_password: str = "broker-secret",
) -> KafkaServer:
    """A broker whose only client listener is TLS (with client certificates required) or SASL_SSL
    (SCRAM-SHA-512 users from ``users``, created when the storage is formatted). Not started."""
    port, controller = free_port(), free_port()
    listener = kind.lower()
    config = {
        "inter.broker.listener.name": kind,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certificates.broker),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certificates.ca),
        "ssl.endpoint.identification.algorithm": "https",
    }
    client: dict[str, Any] = {"security_protocol": kind, "ssl_cafile": str(certificates.ca)}
    format_args: tuple[str, ...] = ()
    if kind == "SSL":
        config["ssl.client.auth"] = "required"  # mutual TLS: a client without a certificate is refused
        client.update(
            ssl_certfile=str(certificates.client_cert), ssl_keyfile=str(certificates.client_key),
            ssl_password=certificates.client_key_password,
        )  # fmt: skip
    else:
        accounts = {BROKER_USER: broker_password, **(users or {})}
        config.update({
            "sasl.enabled.mechanisms": SCRAM,
            "sasl.mechanism.inter.broker.protocol": SCRAM,
            f"listener.name.{listener}.{SCRAM.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{BROKER_USER}" password="{broker_password}";'
            ),
        })  # fmt: skip
        format_args = tuple(
            arg for name, password in accounts.items()
            for arg in ("--add-scram", f"{SCRAM}=[name={name},password={password}]")
        )  # fmt: skip
        client.update(sasl_mechanism=SCRAM, sasl_plain_username=BROKER_USER, sasl_plain_password=broker_password)
    return KafkaServer(
        port=port,
        controller_port=controller,
        workdir=workdir,
        extra_config=config,
        listeners=f"{kind}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        advertised_listeners=f"{kind}://127.0.0.1:{port}",
        protocol_map=f"{kind}:{kind},CONTROLLER:PLAINTEXT",
        format_args=format_args,
        client_config=client,
    )
