"""Settings.from_env: a worker starts only with what it must have, and every refusal names its variable."""

from __future__ import annotations

import pytest

from app.settings import LOG_LEVELS, SETTINGS_VARIABLES, TOOLING_VARIABLES, Settings, SettingsError

REQUIRED = {
    "NUDGE_WRITE_KEYS": "write-key",
    "NUDGE_API_KEYS": "api-key",
    "KAFKA_BROKER_URL": "kafka://localhost:9092",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "NUDGE_SECRET": "0123456789abcdef",
}


def env(**changes: str) -> dict[str, str]:
    return {**REQUIRED, **changes}


def refusal(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ)
    return str(caught.value)


def test_required_keys_are_enough() -> None:
    settings = Settings.from_env(REQUIRED)
    assert settings.write_keys == {"write-key"}
    assert settings.api_keys == {"api-key"}
    assert settings.broker_url == "kafka://localhost:9092"
    assert settings.partitions == 8
    assert settings.store == "memory://"
    assert settings.log_level == "info"
    assert settings.embedded_broker is False
    assert settings.web_url == "http://127.0.0.1:6066"


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        env(
            NUDGE_EMBEDDED_BROKER="yes",
            REDIS_URL="redis://localhost:6379/0",
            NUDGE_STORE="memory://",
            NUDGE_DATA_DIR="/var/lib/nudge",
            NUDGE_APP_ID="nudge-test",
            NUDGE_PARTITIONS="16",
            NUDGE_EVENTS_TOPIC="t.events",
            NUDGE_DLQ_TOPIC="t.dlq",
            NUDGE_WEB_HOST="0.0.0.0",
            NUDGE_WEB_PORT="8080",
            NUDGE_WEB_URL="http://worker-1:8080",
            NUDGE_SESSION_TIMEOUT_S="2.5",
            NUDGE_PRODUCER_LINGER_MS="0",
            NUDGE_COLLECTOR_LINGER_MS="20",
            NUDGE_COLLECTOR_RATE="300",
            NUDGE_COLLECTOR_BURST="600",
            NUDGE_LOG_LEVEL="debug",
            NUDGE_SECRET="s" * 32,
            NUDGE_SEGMENTS_TOPIC="t.segments",
            NUDGE_SEGMENTS_FILE="/etc/nudge/segments.yaml",
            NUDGE_CONTENT_FILE="/etc/nudge/content.yaml",
            NUDGE_LABEL_HORIZON_S="300",
            NUDGE_CLOCK="wall",
            NUDGE_INTENT_MODEL="forest",
            NUDGE_READ_MODEL_TTL_S="60",
        )
    )
    assert settings == Settings(
        broker_url="kafka://localhost:9092",
        embedded_broker=True,
        redis_url="redis://localhost:6379/0",
        store="memory://",
        data_dir="/var/lib/nudge",
        app_id="nudge-test",
        partitions=16,
        events_topic="t.events",
        dlq_topic="t.dlq",
        web_host="0.0.0.0",
        web_port=8080,
        advertised_web_url="http://worker-1:8080",
        write_keys=frozenset({"write-key"}),
        api_keys=frozenset({"api-key"}),
        session_timeout_s=2.5,
        producer_linger_ms=0,
        collector_linger_ms=20,
        collector_rate=300,
        collector_burst=600,
        log_level="debug",
        secret="s" * 32,
        segments_topic="t.segments",
        segments_file="/etc/nudge/segments.yaml",
        content_file="/etc/nudge/content.yaml",
        label_horizon_s=300,
        clock="wall",
        intent_model="forest",
        read_model_ttl_s=60,
    )
    assert settings.label_horizon_ms == 300_000
    assert settings.web_url == "http://worker-1:8080"


def test_the_collector_rate_limit_is_on_by_default_can_be_off_and_is_bounded() -> None:
    settings = Settings.from_env(REQUIRED)
    assert (settings.collector_rate, settings.collector_burst) == (50_000, 100_000)
    assert Settings.from_env(env(NUDGE_COLLECTOR_RATE="0")).collector_rate == 0
    assert refusal(env(NUDGE_COLLECTOR_RATE="-1")) == "NUDGE_COLLECTOR_RATE=-1: expected 0..10000000"
    assert refusal(env(NUDGE_COLLECTOR_BURST="0")) == "NUDGE_COLLECTOR_BURST=0: expected 1..10000000"
    assert refusal(env(NUDGE_COLLECTOR_BURST="lots")) == "NUDGE_COLLECTOR_BURST='lots': expected a whole number"


def test_empty_optional_values_mean_the_default() -> None:
    settings = Settings.from_env(env(NUDGE_PARTITIONS="", NUDGE_EMBEDDED_BROKER="", NUDGE_CLOCK=""))
    assert (settings.partitions, settings.embedded_broker, settings.clock) == (8, False, "event")


@pytest.mark.parametrize(
    "name",
    ["NUDGE_WEB_HOST", "NUDGE_WS_HOST", "NUDGE_EVENTS_TOPIC", "NUDGE_DLQ_TOPIC", "NUDGE_APP_ID", "NUDGE_DATA_DIR"],
)
def test_an_empty_text_value_means_the_default_not_an_empty_one(name: str) -> None:
    # An empty host would listen on every interface; an empty topic or app id would name nothing.
    assert Settings.from_env(env(**{name: ""})) == Settings.from_env(REQUIRED)


def test_a_worker_listening_on_every_interface_must_say_where_others_reach_it() -> None:
    # Faust routes a user's API request to the worker that owns the user by the URL each worker advertises:
    # 0.0.0.0 would make every worker think it owns every user.
    message = refusal(env(NUDGE_WEB_HOST="0.0.0.0"))
    assert message.startswith("NUDGE_WEB_HOST='0.0.0.0' listens on every interface") and "NUDGE_WEB_URL" in message
    settings = Settings.from_env(env(NUDGE_WEB_HOST="0.0.0.0", NUDGE_WEB_URL="http://10.0.0.7:6066"))
    assert settings.web_url == "http://10.0.0.7:6066"
    assert Settings.from_env(env(NUDGE_WEB_HOST="0.0.0.0"), role="gateway").web_host == "0.0.0.0"


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("NUDGE_EVENTS_TOPIC", "my topic!", "a Kafka topic name is 1-249 of"),
        ("NUDGE_AUDIT_TOPIC", "x" * 250, "a Kafka topic name is 1-249 of"),
        ("NUDGE_MESSAGES_TOPIC", "..", "a Kafka topic name is 1-249 of"),
        ("NUDGE_DLQ_TOPIC", "nudge.events", "NUDGE_EVENTS_TOPIC names the same topic"),
        ("REDIS_URL", "localhost:6379", "expected a URL like redis://"),
        ("NUDGE_WEB_URL", "worker-1:6066", "expected a URL like http://"),
    ],
)
def test_names_and_addresses_that_cannot_work_are_refused(name: str, value: str, reason: str) -> None:
    message = refusal(env(**{name: value}))
    assert message.startswith(f"{name}=") and reason in message


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_missing_required_variable_is_refused_by_name(name: str) -> None:
    environ = dict(REQUIRED)
    del environ[name]
    assert name in refusal(environ)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_empty_required_variable_is_refused_by_name(name: str) -> None:
    assert name in refusal(env(**{name: ""}))


@pytest.mark.parametrize("name", ["NUDGE_WRITE_KEYS", "NUDGE_API_KEYS"])
def test_keys_made_only_of_commas_and_spaces_are_refused(name: str) -> None:
    assert name in refusal(env(**{name: " , ,"}))


def test_comma_separated_keys_are_split_and_trimmed() -> None:
    settings = Settings.from_env(env(NUDGE_WRITE_KEYS=" wk1, wk2 ,,wk3 ", NUDGE_API_KEYS="ak1,  ak2"))
    assert settings.write_keys == {"wk1", "wk2", "wk3"}
    assert settings.api_keys == {"ak1", "ak2"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NUDGE_PARTITIONS", "eight"),
        ("NUDGE_PARTITIONS", "0"),
        ("NUDGE_PARTITIONS", "-1"),
        ("NUDGE_PARTITIONS", "2.5"),
        ("NUDGE_PARTITIONS", "1025"),
        ("NUDGE_WEB_PORT", "0"),
        ("NUDGE_WEB_PORT", "65536"),
        ("NUDGE_WEB_PORT", "http"),
        ("NUDGE_PRODUCER_LINGER_MS", "1001"),
        ("NUDGE_COLLECTOR_LINGER_MS", "-5"),
        ("NUDGE_SESSION_TIMEOUT_S", "0"),
        ("NUDGE_CLOCK", "sundial"),
        ("NUDGE_INTENT_MODEL", "oracle"),
        ("NUDGE_LABEL_HORIZON_S", "0"),
        ("NUDGE_READ_MODEL_TTL_S", "soon"),
        ("NUDGE_SESSION_TIMEOUT_S", "soon"),
        ("NUDGE_EMBEDDED_BROKER", "maybe"),
        ("NUDGE_EMBEDDED_BROKER", "2"),
        ("NUDGE_LOG_LEVEL", "verbose"),
        ("NUDGE_LOG_LEVEL", "trace"),
        ("NUDGE_STORE", "redis://localhost"),
        ("NUDGE_STORE", "/var/lib/nudge"),
    ],
)
def test_malformed_variable_is_refused_by_name(name: str, value: str) -> None:
    message = refusal(env(**{name: value}))
    assert message.startswith(f"{name}=")


def test_a_short_secret_is_refused_without_echoing_it() -> None:
    message = refusal(env(NUDGE_SECRET="hunter2"))
    assert message.startswith("NUDGE_SECRET is too short") and "hunter2" not in message


def test_refusals_say_what_was_expected() -> None:
    assert refusal(env(NUDGE_PARTITIONS="eight")) == "NUDGE_PARTITIONS='eight': expected a whole number"
    assert refusal(env(NUDGE_PARTITIONS="0")) == "NUDGE_PARTITIONS=0: expected 1..1024"
    assert refusal(env(NUDGE_WEB_PORT="70000")) == "NUDGE_WEB_PORT=70000: expected 1..65535"
    assert refusal(env(NUDGE_LOG_LEVEL="verbose")) == (
        "NUDGE_LOG_LEVEL='verbose': expected one of " + ", ".join(LOG_LEVELS)
    )


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("TRUE", True), ("on", True), ("No", False), ("0", False)]
)
def test_embedded_broker_flag_spellings(value: str, expected: bool) -> None:
    assert Settings.from_env(env(NUDGE_EMBEDDED_BROKER=value)).embedded_broker is expected


@pytest.mark.parametrize("level", LOG_LEVELS)
def test_every_documented_log_level_is_accepted(level: str) -> None:
    assert Settings.from_env(env(NUDGE_LOG_LEVEL=level)).log_level == level


def test_settings_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Settings.from_env({})


def test_replace_returns_a_changed_copy() -> None:
    settings = Settings.from_env(REQUIRED)
    changed = settings.replace(partitions=4)
    assert (settings.partitions, changed.partitions) == (8, 4)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_session_timeout_is_refused(value: str) -> None:
    assert "NUDGE_SESSION_TIMEOUT_S" in refusal(env(NUDGE_SESSION_TIMEOUT_S=value))


def test_log_level_is_case_insensitive() -> None:
    assert Settings.from_env(env(NUDGE_LOG_LEVEL="INFO")).log_level == "info"


def test_rocksdb_store_is_refused_until_supported() -> None:
    assert "only memory:// is supported" in refusal(env(NUDGE_STORE="rocksdb://"))


def test_default_consent_is_opt_in_and_names_known_purposes_only() -> None:
    assert Settings.from_env(REQUIRED).default_consent == frozenset()
    granted = Settings.from_env(env(NUDGE_DEFAULT_CONSENT="analytics, personalization"))
    assert granted.default_consent == {"analytics", "personalization"}
    assert refusal(env(NUDGE_DEFAULT_CONSENT="analytics,ads")).startswith(
        "NUDGE_DEFAULT_CONSENT: unknown purpose 'ads'"
    )


def test_personal_fields_extend_the_built_in_list_and_bad_paths_are_refused() -> None:
    settings = Settings.from_env(env(NUDGE_PERSONAL_FIELDS="traits.birthday, properties.phone"))
    assert settings.all_personal_fields[-2:] == ("properties.phone", "traits.birthday")
    assert "traits.email" in settings.all_personal_fields
    assert refusal(env(NUDGE_PERSONAL_FIELDS="password")).startswith("NUDGE_PERSONAL_FIELDS: 'password' is not a path")


def test_an_unknown_nudge_variable_is_refused_with_the_closest_known_name() -> None:
    # A typo did nothing before: the worker ran with the default and nobody noticed.
    reason = "NUDGE_SESSION_TIMEOUT is not a Nudge setting: did you mean NUDGE_SESSION_TIMEOUT_S?"
    assert refusal(env(NUDGE_SESSION_TIMEOUT="60")) == reason
    assert refusal(env(NUDGE_ZZZ="1")) == "NUDGE_ZZZ is not a Nudge setting: see the README's Configuration section"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env(NUDGE_PARTITONS="4"), role="gateway")
    assert str(caught.value) == "NUDGE_PARTITONS is not a Nudge setting: did you mean NUDGE_PARTITIONS?"


def test_the_tooling_variables_and_other_prefixes_are_allowed() -> None:
    tooling_names = {"NUDGE_CHROMIUM", "NUDGE_FUZZ_EXAMPLES", "NUDGE_BENCH_SECRET", "NUDGE_WRITE_KEY"}
    assert tooling_names == TOOLING_VARIABLES
    tooling = {name: "x" for name in TOOLING_VARIABLES}
    assert Settings.from_env({**REQUIRED, **tooling, "PATH": "/bin", "NUDGEX": "1"}) == Settings.from_env(REQUIRED)


class _Asked(dict[str, str]):
    """An environment that records every variable looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_settings_variables_is_exactly_what_from_env_reads() -> None:
    recorder = _Asked(REQUIRED)
    Settings.from_env(recorder)
    assert {name for name in recorder.asked if name.startswith("NUDGE_")} == SETTINGS_VARIABLES
