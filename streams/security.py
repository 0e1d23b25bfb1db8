"""Client security from settings, in one place: every Kafka client pssync builds (confluent-kafka
producers, consumers and admin clients; the Faust app's aiokafka clients) gets its connection
settings from here, so TLS and SASL reach all of them alike.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from streams.errors import ConfigError
from streams.settings import KafkaSecurity, Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

KafkaConf = dict[str, Any]


def kafka_config(settings: Settings, **extra: Any) -> KafkaConf:
    """librdkafka configuration: bootstrap, security protocol, SASL and TLS, plus `extra`.

    `extra` holds librdkafka names, which have dots: kafka_config(s, **{"group.id": g}).
    """
    sec = settings.kafka_security
    conf: KafkaConf = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": sec.protocol.lower(),
    }
    if sec.uses_sasl:
        conf["sasl.mechanism"] = sec.sasl_mechanism
        conf["sasl.username"] = sec.sasl_username
        conf["sasl.password"] = sec.sasl_password
    if sec.uses_ssl:
        if sec.ssl_cafile:
            conf["ssl.ca.location"] = sec.ssl_cafile
        if sec.ssl_certfile:
            conf["ssl.certificate.location"] = sec.ssl_certfile
            conf["ssl.key.location"] = sec.ssl_keyfile
        if sec.ssl_key_password:
            conf["ssl.key.password"] = sec.ssl_key_password
    conf.update(extra)
    return conf


def ssl_context(sec: KafkaSecurity) -> ssl.SSLContext:
    """TLS context for aiokafka: verifies the brokers (system CAs or PSSYNC_KAFKA_SSL_CAFILE)."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=sec.ssl_cafile or None)
        if sec.ssl_certfile:
            ctx.load_cert_chain(sec.ssl_certfile, sec.ssl_keyfile, sec.ssl_key_password or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load the Kafka TLS files ({exc}); check PSSYNC_KAFKA_SSL_CAFILE, "
            "PSSYNC_KAFKA_SSL_CERTFILE, PSSYNC_KAFKA_SSL_KEYFILE and PSSYNC_KAFKA_SSL_KEY_PASSWORD"
        ) from exc
    return ctx


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's `broker_credentials` for the same protocol as kafka_config (None: PLAINTEXT)."""
    import faust  # heavy; only the worker needs it

    sec = settings.kafka_security
    if sec.protocol == "PLAINTEXT":
        return None
    context = ssl_context(sec) if sec.uses_ssl else None
    if not sec.uses_sasl:
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=sec.sasl_username,
        password=sec.sasl_password,
        mechanism=sec.sasl_mechanism,
        ssl_context=context,
    )
