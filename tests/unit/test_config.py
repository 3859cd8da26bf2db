"""ringcast.config: loading, validation, environment overrides, rendering, reload diffs.

The declarations in ``ringcast.config`` are the single source of the keys; these tests hold the
example file (``deploy/ringcast.toml``) and the reference (``docs/config.md``) to them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import typing
from pathlib import Path

import pytest

from ringcast.config import (
    ENV_PREFIX,
    RELOADABLE,
    AuthConfig,
    Config,
    LimitsConfig,
    ServerConfig,
    config_from_mapping,
    config_keys,
    diff_configs,
    load_config,
    plan_reload,
)
from ringcast.errors import ConfigError, RingcastError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "ringcast.toml"
REFERENCE = ROOT / "docs" / "config.md"
ALL_PATHS = {key.path for key in config_keys()}


def write(tmp_path: Path, text: str, name: str = "ringcast.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_errors(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """Load ``text`` from ringcast.toml in ``tmp_path`` (cwd) and return the error lines."""
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config("ringcast.toml", env={} if env is None else env)
    return str(info.value).splitlines()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths resolve in tmp_path, so messages name plain ``ringcast.toml``."""
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------------------------------------
# Defaults and the declarations
# ---------------------------------------------------------------------------------------------


def test_no_file_gives_defaults() -> None:
    config = load_config(None, env={})
    assert config == Config()
    assert config.server.port == 8080
    assert config.server.workers == 1
    assert config.ring.arena_size == 4 * 1024 * 1024
    assert config.limits.slow_consumer_policy == "close"
    assert config.cluster.redis_url == ""


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}) == Config()


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RINGCAST_SERVER_PORT", "9001")
    assert load_config(None).server.port == 9001


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server = ServerConfig()  # type: ignore[misc]


def test_config_error_is_a_ringcast_error() -> None:
    assert issubclass(ConfigError, RingcastError)


def literal_strings(annotation: object) -> tuple[object, ...]:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return tuple(v for arg in typing.get_args(annotation) for v in literal_strings(arg))


def test_every_key_is_declared_completely() -> None:
    for key in config_keys():
        assert key.spec.doc.strip(), key.path
        assert "\n" not in key.spec.doc, key.path
        assert "_" not in key.section, key.section  # the env-var scheme relies on it
        assert key.env_var == f"RINGCAST_{key.section.upper()}_{key.name.upper()}"
        # the choices in the metadata are the strings of the Literal annotation
        assert literal_strings(key.annotation) == key.spec.choices, key.path
        if key.spec.at_least is not None:
            assert f"{key.section}.{key.spec.at_least}" in ALL_PATHS


def test_every_default_passes_its_own_validation() -> None:
    """The validator skips keys left out; spelling every default out must give Config()."""
    explicit = Config().as_dict()
    assert config_from_mapping(explicit) == Config()


def test_key_paths_are_unique() -> None:
    paths = [key.path for key in config_keys()]
    assert len(paths) == len(set(paths))


def test_reloadable_keys() -> None:
    limits = {f"limits.{f.name}" for f in dataclasses.fields(LimitsConfig)}
    auth = {f"auth.{f.name}" for f in dataclasses.fields(AuthConfig)}
    assert (
        limits - {"limits.max_connections", "limits.socket_send_buffer"}
        | auth
        | {
            "channels.client_publish",
            "http.publish_token",
            "http.allowed_origins",
            "logging.level",
            "logging.refusals_per_second",
            "logging.access_per_second",
            "logging.access_level",
            "status.enabled",
            "status.top_channels",
            "compression.enabled",
            "compression.level",
            "compression.threshold",
        }
    ) == RELOADABLE
    assert RELOADABLE <= ALL_PATHS


# ---------------------------------------------------------------------------------------------
# The example file and the reference agree with the code
# ---------------------------------------------------------------------------------------------


def toml_keys(data: dict[str, typing.Any]) -> set[str]:
    return {f"{section}.{key}" for section, table in data.items() for key in table}


def reference_rows() -> dict[str, list[str]]:
    """``{"server.port": [key, type, default, allowed, sighup, description], ...}`` read from
    the tables under the ``## `[section]``` headings of docs/config.md."""
    rows: dict[str, list[str]] = {}
    section = None
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = re.fullmatch(r"## `\[(\w+)\]`", line)
            section = heading.group(1) if heading else None
            continue
        row = re.match(r"\| `(\w+)` \|", line)
        if section and row:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            path = f"{section}.{row.group(1)}"
            assert path not in rows, f"{path} documented twice"
            rows[path] = cells
    return rows


def test_example_file_loads_to_defaults() -> None:
    assert load_config(EXAMPLE, env={}) == Config()


def test_key_sets_agree_code_example_reference() -> None:
    example = toml_keys(tomllib.loads(EXAMPLE.read_text(encoding="utf-8")))
    documented = set(reference_rows())
    assert example == ALL_PATHS, "deploy/ringcast.toml"
    assert documented == ALL_PATHS, "docs/config.md"


def test_example_file_comments_every_key_with_its_doc() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    section = ""
    for number, line in enumerate(lines):
        if header := re.fullmatch(r"\[(\w+)\]", line):
            section = header.group(1)
            continue
        assignment = re.match(r"(\w+) = ", line)
        if not assignment:
            continue
        key = next(k for k in config_keys() if k.path == f"{section}.{assignment.group(1)}")
        block: list[str] = []
        for above in reversed(lines[:number]):
            if not above.startswith("#"):
                break
            block.insert(0, above.lstrip("# "))
        assert block, f"{key.path} has no comment"
        assert " ".join(key.spec.doc.split()) in " ".join(" ".join(block).split()), key.path


def test_example_file_is_generated_from_the_declarations() -> None:
    regenerate = (
        "regenerate the part after the header: "
        "python -c 'from ringcast.config import Config; print(Config().to_toml(with_docs=True))'"
    )
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.endswith(Config().to_toml(with_docs=True)), regenerate


def test_reference_defaults_and_reload_column_match_the_code() -> None:
    rows = reference_rows()
    for key in config_keys():
        _name, type_name, default, _allowed, sighup, description = rows[key.path]
        expected = list(key.default) if isinstance(key.default, tuple) else key.default
        assert tomllib.loads(f"v = {default.strip('`')}")["v"] == expected, key.path
        assert sighup == ("yes" if key.path in RELOADABLE else "no"), key.path
        assert type_name.replace("`", "") == key.type_name, key.path
        assert description.replace("\\<", "<") == key.spec.doc, key.path


def test_reference_documents_env_scheme_and_error_format() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    assert "RINGCAST_<SECTION>_<KEY>" in text
    assert "RINGCAST_LIMITS_MAX_MESSAGE_SIZE=65536" in text
    assert "did you mean 'limits.max_message_size'?" in text


# ---------------------------------------------------------------------------------------------
# Errors in the file
# ---------------------------------------------------------------------------------------------


def test_unknown_key_suggests_the_nearest(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "[limits]\nmax_mesage_size = 5\n")
    assert errors == [
        "ringcast.toml: unknown key 'limits.max_mesage_size' — "
        "did you mean 'limits.max_message_size'?"
    ]


def test_key_in_the_wrong_section_points_to_its_home(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "[server]\nmax_connections = 5\n")
    assert errors == [
        "ringcast.toml: unknown key 'server.max_connections' — "
        "did you mean 'limits.max_connections'?"
    ]


def test_unknown_key_without_a_near_name_lists_the_section(tmp_path: Path) -> None:
    (error,) = load_errors(tmp_path, "[metrics]\nzzz = 1\n")
    assert error == "ringcast.toml: unknown key 'metrics.zzz' (valid keys in [metrics]: enabled)"


def test_unknown_section_suggests_the_nearest(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "[limit]\nmax_connections = 5\n")
    assert errors == ["ringcast.toml: unknown section 'limit' — did you mean 'limits'?"]


def test_unknown_section_without_a_near_name_lists_sections(tmp_path: Path) -> None:
    (error,) = load_errors(tmp_path, "[zzzz]\n")
    assert error.startswith("ringcast.toml: unknown section 'zzzz' (valid sections: server, ring")


def test_key_outside_any_section(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "port = 9000\n")
    assert errors == [
        "ringcast.toml: unknown key 'port' — did you mean 'server.port' (under [server])?"
    ]


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "server = 5\n")
    assert errors == ["ringcast.toml: server: expected a table [server], got integer 5"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('port = "10"', 'server.port: expected an integer, got string "10"'),
        ("port = true", "server.port: expected an integer, got boolean true"),
        ("port = 80.0", "server.port: expected an integer, got float 80.0"),
        ("port = [80]", "server.port: expected an integer, got an array"),
        ("port = {n = 80}", "server.port: expected an integer, got a table"),
        ("echo = 1", "server.echo: expected a boolean (true or false), got integer 1"),
        ('echo = "true"', 'server.echo: expected a boolean (true or false), got string "true"'),
        ("host = 127", "server.host: expected a string, got integer 127"),
        (
            'workers = "many"',
            'server.workers: expected an integer or "auto", got string "many"',
        ),
        ("workers = true", 'server.workers: expected an integer or "auto", got boolean true'),
        (
            "backend = 1",
            'server.backend: expected one of "auto", "io_uring", "epoll", got integer 1',
        ),
    ],
)
def test_wrong_type(tmp_path: Path, line: str, message: str) -> None:
    assert load_errors(tmp_path, f"[server]\n{line}\n") == [f"ringcast.toml: {message}"]


def test_bool_is_not_a_number(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "[limits]\nmax_connections = true\nping_interval = false\n")
    assert errors == [
        "ringcast.toml: limits.max_connections: expected an integer or \"auto\", got boolean true",
        "ringcast.toml: limits.ping_interval: expected a number, got boolean false",
    ]


def test_integer_is_accepted_for_a_float(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[limits]\nping_interval = 30\n"), env={})
    assert config.limits.ping_interval == 30.0
    assert isinstance(config.limits.ping_interval, float)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = -1", "server.port: -1 is out of range (allowed: 0..65535)"),
        ("[server]\nport = 65536", "server.port: 65536 is out of range (allowed: 0..65535)"),
        ("[server]\nworkers = 0", "server.workers: 0 is out of range (allowed: 1..256)"),
        (
            "[limits]\nhandshake_timeout = 0",
            "limits.handshake_timeout: 0 is out of range (allowed: > 0 and <= 3600 seconds)",
        ),
        (
            "[limits]\nping_interval = -1.5",
            "limits.ping_interval: -1.5 is out of range (allowed: 0..3600 seconds)",
        ),
        (
            "[limits]\nqueue_max_bytes = 1023",
            "limits.queue_max_bytes: 1023 is out of range (allowed: 1024..1073741824 bytes)",
        ),
        (
            "[limits]\nmax_message_size = 124",
            "limits.max_message_size: 124 is out of range (allowed: 125..268435456 bytes)",
        ),
        (
            "[limits]\nclose_timeout = nan",
            "limits.close_timeout: expected a finite number, got nan",
        ),
        (
            "[shutdown]\ndrain_timeout = inf",
            "shutdown.drain_timeout: expected a finite number, got inf",
        ),
    ],
)
def test_out_of_range(tmp_path: Path, text: str, message: str) -> None:
    assert load_errors(tmp_path, text + "\n") == [f"ringcast.toml: {message}"]


def test_bounds_are_inclusive(tmp_path: Path) -> None:
    text = (
        "[server]\nport = 65535\nworkers = 256\n"
        "[limits]\nping_interval = 0\nqueue_max_bytes = 1024\nhandshake_timeout = 3600\n"
        "[ring]\narena_size = 0\nzero_copy_threshold = 0\n"
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.server.port == 65535
    assert config.limits.ping_interval == 0.0
    assert config.ring.arena_size == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[logging]\nlevel = "warn"',
            'logging.level: "warn" is not one of "debug", "info", "warning", "error" '
            '— did you mean "warning"?',
        ),
        (
            '[limits]\nslow_consumer_policy = "Drop"',
            'limits.slow_consumer_policy: "Drop" is not one of "drop", "close" '
            '— did you mean "drop"?',
        ),
        (
            '[server]\nbackend = "kqueue"',
            'server.backend: "kqueue" is not one of "auto", "io_uring", "epoll"',
        ),
        (
            '[logging]\nformat = "yaml"',
            'logging.format: "yaml" is not one of "text", "json"',
        ),
    ],
)
def test_bad_choice(tmp_path: Path, text: str, message: str) -> None:
    assert load_errors(tmp_path, text + "\n") == [f"ringcast.toml: {message}"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[server]\nhost = ""', 'server.host: expected a non-empty address without spaces, got ""'),
        (  # a secret is not quoted
            '[http]\npublish_token = "a b"',
            "http.publish_token: expected printable ASCII without spaces, "
            "got a string of 3 characters (not shown: it is a secret)",
        ),
        (
            '[cluster]\nredis_url = "http://localhost:6379"',
            "cluster.redis_url: expected empty or redis://host[:port][/db], "
            'got "http://localhost:6379"',
        ),
    ],
)
def test_string_patterns(tmp_path: Path, text: str, message: str) -> None:
    assert load_errors(tmp_path, text + "\n") == [f"ringcast.toml: {message}"]


@pytest.mark.parametrize(
    "url", ["", "redis://localhost", "redis://10.0.0.5:6380", "redis://u:pw@cache:6379/2"]
)
def test_redis_urls_accepted(tmp_path: Path, url: str) -> None:
    config = load_config(write(tmp_path, f'[cluster]\nredis_url = "{url}"\n'), env={})
    assert config.cluster.redis_url == url


def test_power_of_two(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "[ring]\nsq_entries = 1000\nbuffer_count = 3000\n")
    assert errors == [
        "ringcast.toml: ring.sq_entries: 1000 is not a power of two (try 512 or 1024)",
        "ringcast.toml: ring.buffer_count: 3000 is not a power of two (try 2048 or 4096)",
    ]


def test_cq_entries_at_least_sq_entries(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "[ring]\nsq_entries = 8192\ncq_entries = 4096\n")
    assert errors == [
        "ringcast.toml: ring.cq_entries: 4096 must be at least ring.sq_entries (8192)"
    ]
    errors = load_errors(tmp_path, "[ring]\ncq_entries = 1024\n")  # against the default sq
    assert errors == [
        "ringcast.toml: ring.cq_entries: 1024 must be at least ring.sq_entries (4096)"
    ]
    config = load_config(write(tmp_path, "[ring]\nsq_entries = 64\ncq_entries = 64\n"), env={})
    assert (config.ring.sq_entries, config.ring.cq_entries) == (64, 64)


def test_no_cross_check_when_a_side_is_already_wrong(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "[ring]\nsq_entries = 100000\ncq_entries = 4096\n")
    assert errors == ["ringcast.toml: ring.sq_entries: 100000 is out of range (allowed: 8..32768)"]


def test_relations_that_are_not_required(tmp_path: Path) -> None:
    text = (
        "[limits]\nping_interval = 5\nping_timeout = 60\nmax_message_size = 268435456\n"
        "[ring]\narena_size = 1048576\n"
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.limits.ping_timeout > config.limits.ping_interval
    assert config.limits.max_message_size > config.ring.arena_size


def test_toml_syntax_error_names_file_and_position(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "[server]\nport = 80\nhost 127.0.0.1\n")
    assert len(errors) == 1
    assert errors[0].startswith("ringcast.toml: invalid TOML: ")
    assert "line 3" in errors[0]
    assert "column" in errors[0]


def test_duplicate_key_is_a_toml_error(tmp_path: Path) -> None:
    (error,) = load_errors(tmp_path, "[server]\nport = 1\nport = 2\n")
    assert error.startswith("ringcast.toml: invalid TOML: ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("nope.toml", env={})
    message = str(info.value)
    assert message.startswith("nope.toml: the config file does not exist")
    assert str(tmp_path / "nope.toml") in message
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent" / "x.toml", env={})


def test_directory_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})
    (tmp_path / "latin1.toml").write_bytes(b'[server]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1\.toml: not valid UTF-8"):
        load_config("latin1.toml", env={})


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    text = (
        '[server]\nport = -1\nwokers = 4\nbackend = "uring"\n'
        "[limits]\nmax_connections = true\n"
        '[logging]\nlevel = "loud"\n'
        "[metric]\nenabled = true\n"
    )
    errors = load_errors(tmp_path, text)
    assert len(errors) == 6
    assert all(e.startswith("ringcast.toml: ") for e in errors)
    joined = "\n".join(errors)
    for fragment in (
        "unknown section 'metric' — did you mean 'metrics'?",
        "unknown key 'server.wokers' — did you mean 'server.workers'?",
        "server.port: -1 is out of range",
        'server.backend: "uring" is not one of',
        "limits.max_connections: expected an integer or \"auto\", got boolean true",
        'logging.level: "loud" is not one of',
    ):
        assert fragment in joined


def test_config_from_mapping_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"server": {"port": -1}})
    assert str(info.value) == "<mapping>: server.port: -1 is out of range (allowed: 0..65535)"
    with pytest.raises(ConfigError, match=r"^inline: "):
        config_from_mapping({"serve": {}}, source="inline")
    config = config_from_mapping({"server": {"port": 1234}}, source="inline")
    assert config.server.port == 1234


# ---------------------------------------------------------------------------------------------
# Environment overrides
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "path", "expected"),
    [
        ("RINGCAST_SERVER_PORT", "9000", "server.port", 9000),
        ("RINGCAST_SERVER_PORT", " 9000 ", "server.port", 9000),
        ("RINGCAST_LIMITS_MAX_MESSAGE_SIZE", "65536", "limits.max_message_size", 65536),
        ("RINGCAST_LIMITS_PING_INTERVAL", "0", "limits.ping_interval", 0.0),
        ("RINGCAST_LIMITS_PING_TIMEOUT", "2.5", "limits.ping_timeout", 2.5),
        ("RINGCAST_LIMITS_CLOSE_TIMEOUT", "1e1", "limits.close_timeout", 10.0),
        ("RINGCAST_SERVER_ECHO", "true", "server.echo", True),
        ("RINGCAST_SERVER_ECHO", "YES", "server.echo", True),
        ("RINGCAST_SERVER_ECHO", "1", "server.echo", True),
        ("RINGCAST_CHANNELS_CLIENT_PUBLISH", "no", "channels.client_publish", False),
        ("RINGCAST_CHANNELS_CLIENT_PUBLISH", "False", "channels.client_publish", False),
        ("RINGCAST_CHANNELS_CLIENT_PUBLISH", "0", "channels.client_publish", False),
        ("RINGCAST_SERVER_WORKERS", "auto", "server.workers", "auto"),
        ("RINGCAST_SERVER_WORKERS", "8", "server.workers", 8),
        ("RINGCAST_SERVER_HOST", "0.0.0.0", "server.host", "0.0.0.0"),
        ("RINGCAST_HTTP_PUBLISH_TOKEN", "s3cr3t", "http.publish_token", "s3cr3t"),
        ("RINGCAST_HTTP_PUBLISH_TOKEN", "", "http.publish_token", ""),
        ("RINGCAST_LOGGING_LEVEL", "debug", "logging.level", "debug"),
        ("RINGCAST_CLUSTER_REDIS_URL", "redis://r:6379/0", "cluster.redis_url", "redis://r:6379/0"),
    ],
)
def test_env_override_types(var: str, value: str, path: str, expected: object) -> None:
    config = load_config(None, env={var: value})
    section, key = path.split(".")
    actual = getattr(getattr(config, section), key)
    assert actual == expected
    assert type(actual) is type(expected)


def test_every_key_has_a_working_env_override() -> None:
    defaults = Config().as_dict()
    env = {}
    for key in config_keys():
        value = defaults[key.section][key.name]
        if isinstance(value, bool):
            env[key.env_var] = str(value).lower()
        elif isinstance(value, list):
            env[key.env_var] = ",".join(value)
        else:
            env[key.env_var] = str(value)
    assert load_config(None, env=env) == Config()


def test_env_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 7000\nhost = "0.0.0.0"\n')
    config = load_config(path, env={"RINGCAST_SERVER_PORT": "7001"})
    assert config.server.port == 7001
    assert config.server.host == "0.0.0.0"


def test_env_value_errors() -> None:
    env = {
        "RINGCAST_SERVER_PORT": "abc",
        "RINGCAST_SERVER_BACKLOG": "10.5",
        "RINGCAST_SERVER_ECHO": "maybe",
        "RINGCAST_SERVER_WORKERS": "lots",
        "RINGCAST_LIMITS_PING_TIMEOUT": "soon",
        "RINGCAST_LIMITS_PING_INTERVAL": "nan",
        "RINGCAST_RING_CQ_ENTRIES": "8",
        "RINGCAST_LOGGING_LEVEL": "verbose",
    }
    with pytest.raises(ConfigError) as info:
        load_config(None, env=env)
    assert str(info.value).splitlines() == [
        'environment variable RINGCAST_SERVER_PORT: server.port: expected an integer, got "abc"',
        "environment variable RINGCAST_SERVER_BACKLOG: server.backlog: "
        'expected an integer, got "10.5"',
        "environment variable RINGCAST_SERVER_WORKERS: server.workers: "
        'expected an integer or "auto", got "lots"',
        "environment variable RINGCAST_SERVER_ECHO: server.echo: "
        'expected a boolean (true/false, 1/0, yes/no), got "maybe"',
        "environment variable RINGCAST_RING_CQ_ENTRIES: ring.cq_entries: "
        "8 is out of range (allowed: 16..65536)",
        "environment variable RINGCAST_LIMITS_PING_INTERVAL: limits.ping_interval: "
        "expected a finite number, got nan",
        "environment variable RINGCAST_LIMITS_PING_TIMEOUT: limits.ping_timeout: "
        'expected a number, got "soon"',
        "environment variable RINGCAST_LOGGING_LEVEL: logging.level: "
        '"verbose" is not one of "debug", "info", "warning", "error"',
    ]


def test_env_cross_check_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"RINGCAST_RING_CQ_ENTRIES": "1024"})
    assert str(info.value) == (
        "environment variable RINGCAST_RING_CQ_ENTRIES: ring.cq_entries: "
        "1024 must be at least ring.sq_entries (4096)"
    )


@pytest.mark.parametrize(
    ("var", "message"),
    [
        ("RINGCAST_LIMITS_MAX_MESAGE_SIZE", "did you mean RINGCAST_LIMITS_MAX_MESSAGE_SIZE?"),
        ("RINGCAST_SERVER_PROT", "did you mean RINGCAST_SERVER_PORT?"),
        ("RINGCAST_SERVER_MAX_CONNECTIONS", "did you mean RINGCAST_LIMITS_MAX_CONNECTIONS?"),
        ("RINGCAST_LIMIT_MAX_CONNECTIONS", "did you mean RINGCAST_LIMITS_MAX_CONNECTIONS?"),
        ("RINGCAST_server_port", "did you mean RINGCAST_SERVER_PORT?"),
        ("RINGCAST_METRICS_ZZZ", "(valid: RINGCAST_METRICS_ENABLED)"),
    ],
)
def test_unknown_env_variables(var: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={var: "1"})
    assert str(info.value) == f"environment variable {var}: no such key" + (
        f" — {message}" if message.startswith("did") else f" {message}"
    )


def test_unrelated_variables_are_ignored() -> None:
    env = {
        "RINGCAST_CONFIG": "/etc/ringcast/ringcast.toml",
        "RINGCAST_TEST_TIMEOUT_FACTOR": "3",
        "SERVER_PORT": "1",
        "PATH": "/usr/bin",
    }
    assert load_config(None, env=env) == Config()


def test_file_and_env_errors_are_reported_together(tmp_path: Path) -> None:
    errors = load_errors(
        tmp_path,
        "[server]\nport = -1\n",
        env={"RINGCAST_SERVER_BACKLOG": "x", "RINGCAST_SERVER_PROT": "1"},
    )
    assert len(errors) == 3
    assert errors[0].startswith("ringcast.toml: server.port: ")
    assert errors[1].startswith("environment variable RINGCAST_SERVER_BACKLOG: ")
    assert errors[2].startswith("environment variable RINGCAST_SERVER_PROT: ")


def test_env_prefix() -> None:
    assert ENV_PREFIX == "RINGCAST_"


# ---------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------


def test_workers_auto_and_integer(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, '[server]\nworkers = "auto"\n'), env={}).server.workers == (
        "auto"
    )
    assert load_config(write(tmp_path, "[server]\nworkers = 16\n"), env={}).server.workers == 16
    errors = load_errors(tmp_path, '[server]\nworkers = "AUTO"\n')
    assert errors == [
        'ringcast.toml: server.workers: expected an integer or "auto", got string "AUTO"'
    ]


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def unusual_config() -> Config:
    return config_from_mapping(
        {
            "server": {"host": "::", "port": 9000, "workers": "auto", "echo": True},
            "ring": {"sq_entries": 256, "cq_entries": 256, "arena_size": 0},
            "limits": {"ping_interval": 0, "ping_timeout": 0.125, "slow_consumer_policy": "drop"},
            "http": {"publish_token": 'q"uo\\te'},
            "logging": {"level": "debug", "format": "json"},
            "cluster": {"redis_url": "redis://user:p%40ss@cache:6380/3"},
        }
    )


@pytest.mark.parametrize("make", [Config, unusual_config])
@pytest.mark.parametrize("with_docs", [False, True])
def test_to_toml_round_trips(
    tmp_path: Path, make: typing.Callable[[], Config], with_docs: bool
) -> None:
    config = make()
    path = write(tmp_path, config.to_toml(with_docs=with_docs), "effective.toml")
    assert load_config(path, env={}) == config


def test_to_toml_strings_are_escaped() -> None:
    text = unusual_config().to_toml()
    assert 'publish_token = "q\\"uo\\\\te"' in text
    assert tomllib.loads(text)["http"]["publish_token"] == 'q"uo\\te'


def test_to_toml_shape() -> None:
    text = Config().to_toml()
    assert text.startswith('[server]\nhost = "127.0.0.1"\nport = 8080\n')
    assert "#" not in text
    assert toml_keys(tomllib.loads(text)) == ALL_PATHS


def test_as_dict() -> None:
    data = unusual_config().as_dict()
    assert data["server"]["workers"] == "auto"
    assert data["limits"]["ping_interval"] == 0.0
    assert set(data) == {f.name for f in dataclasses.fields(Config)}
    assert {f"{s}.{k}" for s, table in data.items() for k in table} == ALL_PATHS
    assert json.loads(json.dumps(data)) == data
    assert config_from_mapping(data) == unusual_config()


# ---------------------------------------------------------------------------------------------
# Reload
# ---------------------------------------------------------------------------------------------


def test_diff_configs() -> None:
    old = Config()
    assert diff_configs(old, old) == ([], [])
    new = config_from_mapping(
        {
            "server": {"port": 9000},
            "limits": {"max_message_size": 4096, "max_connections": 5},
            "logging": {"level": "debug"},
            "http": {"publish_token": "t"},
        }
    )
    reloadable, restart = diff_configs(old, new)
    assert reloadable == ["limits.max_message_size", "http.publish_token", "logging.level"]
    assert restart == ["server.port", "limits.max_connections"]
    assert diff_configs(new, old) == (reloadable, restart)


def test_plan_reload_applies_the_live_keys_and_keeps_the_rest() -> None:
    running = Config()
    new = config_from_mapping(
        {
            "server": {"port": 9000},
            "limits": {"max_message_size": 4096, "max_connections": 5},
            "logging": {"level": "debug"},
        }
    )
    plan = plan_reload(running, new)
    assert plan.live == ("limits.max_message_size", "logging.level")
    assert plan.restart == ("server.port", "limits.max_connections")
    assert plan.applied.limits.max_message_size == 4096
    assert plan.applied.logging.level == "debug"
    assert plan.applied.server.port == running.server.port  # needs a restart: not applied
    assert plan.applied.limits.max_connections == running.limits.max_connections


def test_plan_reload_without_changes_keeps_the_running_config() -> None:
    running = Config()
    plan = plan_reload(running, Config())
    assert (plan.applied, plan.live, plan.restart) == (running, (), ())


def test_plan_reload_reads_a_public_key_file_again_even_unchanged(tmp_path: Path) -> None:
    key = tmp_path / "jwt.pub.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----\n")
    running = config_from_mapping({"auth": {"jwt_public_key_file": str(key)}})
    plan = plan_reload(running, running)
    assert plan.live == ("auth.jwt_public_key_file",)
    assert plan.applied == running
    assert plan.describe(plan.live) == f'auth.jwt_public_key_file "{key}" (read again)'


def test_plan_reload_describes_each_change_old_to_new() -> None:
    running = Config()
    new = config_from_mapping({"server": {"port": 9000}, "limits": {"max_message_size": 4096},
                               "logging": {"level": "debug"}})
    plan = plan_reload(running, new)
    assert plan.describe(plan.live) == ('limits.max_message_size 1048576 -> 4096, '
                                        'logging.level "info" -> "debug"')
    assert plan.describe(plan.restart) == "server.port 8080 -> 9000"


def test_plan_reload_masks_secrets_in_its_description() -> None:
    secrets = ("token-one-0123456789", "token-two-0123456789", "token-three-0123456789",
               "publish-0123456789", "jwt-secret-0123456789-0123456789", "redis-pw")
    running = config_from_mapping({"auth": {"publish_tokens": [secrets[0]]},
                                   "cluster": {"redis_url": "redis://app:redis-pw@db:6379"}})
    new = config_from_mapping({"auth": {"publish_tokens": list(secrets[1:3]),
                                        "jwt_secret": secrets[4]},
                               "http": {"publish_token": secrets[3]},
                               "cluster": {"redis_url": "redis://app:redis-pw@db2:6379"}})
    plan = plan_reload(running, new)
    live, restart = plan.describe(plan.live), plan.describe(plan.restart)
    assert "auth.publish_tokens [***] -> [***, ***]" in live
    assert 'http.publish_token "" -> ***' in live
    assert 'auth.jwt_secret "" -> ***' in live
    assert restart == ('cluster.redis_url "redis://app:***@db:6379" -> '
                       '"redis://app:***@db2:6379"')
    assert not [s for s in secrets if s in live + restart], live + restart


def test_diff_configs_covers_every_key() -> None:
    changed = unusual_config()
    reloadable, restart = diff_configs(Config(), changed)
    assert set(reloadable) <= RELOADABLE
    assert not set(restart) & RELOADABLE
    assert "server.workers" in restart
    assert "limits.slow_consumer_policy" in reloadable


# ---------------------------------------------------------------------------------------------
# Security keys: arrays, secrets, files, switches that need a key
# ---------------------------------------------------------------------------------------------

TOKEN = "tok-0123456789abcdef"


def test_security_defaults_are_off() -> None:
    config = Config()
    assert config.auth.publish_tokens == ()
    assert config.auth.jwt_algorithms == ("HS256",)
    assert not config.auth.require_subscribe_auth
    assert not config.auth.require_publish_auth
    assert config.http.allowed_origins == ()
    assert config.limits.max_messages_per_second == 0.0
    assert config.limits.max_connections_per_ip == 0
    assert (config.limits.max_request_line, config.limits.max_header_size) == (8192, 16384)
    assert config.limits.max_headers == 100


def test_arrays_load_as_tuples(tmp_path: Path) -> None:
    text = (
        f'[auth]\npublish_tokens = ["{TOKEN}", "{TOKEN}-2"]\n'
        'jwt_algorithms = ["RS256", "ES256"]\n'
        '[http]\nallowed_origins = ["https://app.example.com", "https://*.example.org:*"]\n'
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.auth.publish_tokens == (TOKEN, f"{TOKEN}-2")
    assert config.auth.jwt_algorithms == ("RS256", "ES256")
    assert config.http.allowed_origins == ("https://app.example.com", "https://*.example.org:*")
    empty = load_config(write(tmp_path, "[auth]\njwt_algorithms = []\n"), env={})
    assert empty.auth.jwt_algorithms == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            f'[auth]\npublish_tokens = "{TOKEN}"',
            "auth.publish_tokens: expected an array of strings, "
            "got a string of 20 characters (not shown: it is a secret)",
        ),
        (
            "[http]\nallowed_origins = 5",
            "http.allowed_origins: expected an array of strings, got integer 5",
        ),
        (
            f'[auth]\nsubscribe_tokens = ["{TOKEN}", 5]',
            "auth.subscribe_tokens: item 2: expected a string, got integer 5",
        ),
        (
            '[auth]\njwt_algorithms = ["HS256", "none"]',
            'auth.jwt_algorithms: item 2: "none" is not one of "HS256", "HS384", "HS512", '
            '"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", '
            '"EdDSA"',
        ),
        (
            '[auth]\njwt_algorithms = ["hs256"]',
            'auth.jwt_algorithms: item 1: "hs256" is not one of "HS256", "HS384", "HS512", '
            '"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", '
            '"EdDSA" — did you mean "HS256"?',
        ),
        (
            '[auth]\npublish_tokens = ["short-secret"]',
            "auth.publish_tokens: item 1: expected at least 16 characters from "
            "A-Z a-z 0-9 - . _ ~ + / =, got a string of 12 characters (not shown: it is a secret)",
        ),
        (
            '[auth]\npublish_tokens = ["has a space in it!!"]',
            "auth.publish_tokens: item 1: expected at least 16 characters from "
            "A-Z a-z 0-9 - . _ ~ + / =, got a string of 19 characters (not shown: it is a secret)",
        ),
        (
            '[auth]\njwt_secret = "too-short"',
            "auth.jwt_secret: expected empty or at least 32 printable ASCII characters, "
            "got a string of 9 characters (not shown: it is a secret)",
        ),
        (
            '[http]\nallowed_origins = ["*"]',
            "http.allowed_origins: item 1: expected scheme://host[:port], the host may start "
            'with *. and the port may be *, got "*"',
        ),
        (
            '[http]\nallowed_origins = ["https://app.example.com/"]',
            "http.allowed_origins: item 1: expected scheme://host[:port], the host may start "
            'with *. and the port may be *, got "https://app.example.com/"',
        ),
        (
            '[auth]\njwt_audience = "a\\nb"',
            'auth.jwt_audience: expected no control characters, got "a\\nb"',
        ),
    ],
)
def test_array_and_secret_errors(tmp_path: Path, text: str, message: str) -> None:
    assert load_errors(tmp_path, text + "\n") == [f"ringcast.toml: {message}"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[limits]\nmax_request_line = 255",
            "limits.max_request_line: 255 is out of range (allowed: 256..1048576 bytes)",
        ),
        (
            "[limits]\nmax_header_size = 1023",
            "limits.max_header_size: 1023 is out of range (allowed: 1024..1048576 bytes)",
        ),
        ("[limits]\nmax_headers = 7", "limits.max_headers: 7 is out of range (allowed: 8..10000)"),
        (
            "[limits]\nmessage_burst = 0",
            "limits.message_burst: 0 is out of range (allowed: 1..1000000 messages)",
        ),
        (
            "[limits]\nmax_messages_per_second = -0.5",
            "limits.max_messages_per_second: -0.5 is out of range "
            "(allowed: 0..1000000 messages/second)",
        ),
        (
            "[limits]\nmax_connections_per_ip = -1",
            "limits.max_connections_per_ip: -1 is out of range (allowed: 0..1048576)",
        ),
        (
            "[auth]\njwt_leeway = 3601",
            "auth.jwt_leeway: 3601 is out of range (allowed: 0..3600 seconds)",
        ),
        (
            "[auth]\nrequire_publish_auth = 1",
            "auth.require_publish_auth: expected a boolean (true or false), got integer 1",
        ),
    ],
)
def test_security_ranges_and_types(tmp_path: Path, text: str, message: str) -> None:
    assert load_errors(tmp_path, text + "\n") == [f"ringcast.toml: {message}"]


def test_rate_limit_may_be_fractional(tmp_path: Path) -> None:
    text = "[limits]\nmax_messages_per_second = 0.5\nmessage_burst = 1\n"
    config = load_config(write(tmp_path, text), env={})
    assert config.limits.max_messages_per_second == 0.5


def test_require_subscribe_auth_needs_a_token_source(tmp_path: Path) -> None:
    errors = load_errors(tmp_path, "[auth]\nrequire_subscribe_auth = true\n")
    assert errors == [
        "ringcast.toml: auth.require_subscribe_auth: true needs one of auth.subscribe_tokens, "
        "auth.publish_tokens, http.publish_token, auth.jwt_secret, auth.jwt_public_key_file "
        "to be set"
    ]
    for source in (
        f'[auth]\nsubscribe_tokens = ["{TOKEN}"]',
        f'[auth]\npublish_tokens = ["{TOKEN}"]',
        '[http]\npublish_token = "legacy"\n[auth]',
        f'[auth]\njwt_secret = "{"s" * 32}"',
    ):
        text = source + "\nrequire_subscribe_auth = true\n"
        assert load_config(write(tmp_path, text), env={}).auth.require_subscribe_auth


def test_require_publish_auth_needs_a_publish_source(tmp_path: Path) -> None:
    text = f'[auth]\nrequire_publish_auth = true\nsubscribe_tokens = ["{TOKEN}"]\n'
    (error,) = load_errors(tmp_path, text)
    assert error.startswith("ringcast.toml: auth.require_publish_auth: true needs one of ")
    assert "auth.subscribe_tokens" not in error
    text = f'[auth]\nrequire_publish_auth = true\npublish_tokens = ["{TOKEN}"]\n'
    assert load_config(write(tmp_path, text), env={}).auth.require_publish_auth


def test_requirement_names_the_environment_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"RINGCAST_AUTH_REQUIRE_SUBSCRIBE_AUTH": "yes"})
    assert str(info.value).startswith(
        "environment variable RINGCAST_AUTH_REQUIRE_SUBSCRIBE_AUTH: auth.require_subscribe_auth: "
        "true needs one of"
    )
    env = {"RINGCAST_AUTH_REQUIRE_SUBSCRIBE_AUTH": "yes", "RINGCAST_AUTH_JWT_SECRET": "s" * 40}
    assert load_config(None, env=env).auth.jwt_secret == "s" * 40


def test_requirement_is_not_checked_when_its_source_is_already_wrong(tmp_path: Path) -> None:
    text = '[auth]\nrequire_subscribe_auth = true\npublish_tokens = ["short"]\n'
    (error,) = load_errors(tmp_path, text)
    assert error.startswith("ringcast.toml: auth.publish_tokens: item 1: ")


def test_public_key_file_must_be_readable(tmp_path: Path) -> None:
    key = tmp_path / "jwt.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n")
    text = '[auth]\njwt_public_key_file = "jwt.pem"\njwt_algorithms = ["RS256"]\n'
    assert load_config(write(tmp_path, text), env={}).auth.jwt_public_key_file == "jwt.pem"
    assert load_errors(tmp_path, '[auth]\njwt_public_key_file = "nope.pem"\n') == [
        'ringcast.toml: auth.jwt_public_key_file: cannot read "nope.pem": No such file or directory'
    ]
    (tmp_path / "dir").mkdir()
    assert load_errors(tmp_path, '[auth]\njwt_public_key_file = "dir"\n') == [
        'ringcast.toml: auth.jwt_public_key_file: "dir" is a directory, not a file'
    ]


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("RINGCAST_AUTH_PUBLISH_TOKENS", f"{TOKEN}", (TOKEN,)),
        ("RINGCAST_AUTH_PUBLISH_TOKENS", f" {TOKEN} , {TOKEN}-2 ,", (TOKEN, f"{TOKEN}-2")),
        ("RINGCAST_AUTH_PUBLISH_TOKENS", "", ()),
        ("RINGCAST_AUTH_JWT_ALGORITHMS", "RS256,ES256", ("RS256", "ES256")),
        ("RINGCAST_HTTP_ALLOWED_ORIGINS", "https://a.example.com", ("https://a.example.com",)),
    ],
)
def test_arrays_from_the_environment(var: str, value: str, expected: tuple[str, ...]) -> None:
    config = load_config(None, env={var: value})
    section, key = var.removeprefix("RINGCAST_").lower().split("_", 1)
    assert getattr(getattr(config, section), key) == expected


def test_array_errors_from_the_environment() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"RINGCAST_AUTH_JWT_ALGORITHMS": "HS256,none"})
    assert str(info.value).startswith(
        'environment variable RINGCAST_AUTH_JWT_ALGORITHMS: auth.jwt_algorithms: item 2: "none"'
    )


def test_arrays_render_and_round_trip(tmp_path: Path) -> None:
    config = config_from_mapping(
        {
            "auth": {"publish_tokens": [TOKEN], "jwt_algorithms": ["HS256", "EdDSA"]},
            "http": {"allowed_origins": ["https://app.example.com"]},
        }
    )
    text = config.to_toml()
    assert f'publish_tokens = ["{TOKEN}"]' in text
    assert 'jwt_algorithms = ["HS256", "EdDSA"]' in text
    assert load_config(write(tmp_path, text, "effective.toml"), env={}) == config
    assert config.as_dict()["auth"]["jwt_algorithms"] == ["HS256", "EdDSA"]
    assert json.loads(json.dumps(config.as_dict())) == config.as_dict()


def test_security_keys_reload() -> None:
    new = config_from_mapping(
        {
            "auth": {"publish_tokens": [TOKEN], "require_publish_auth": True},
            "http": {"allowed_origins": ["https://app.example.com"]},
            "limits": {"max_messages_per_second": 10, "max_connections_per_ip": 20},
        }
    )
    reloadable, restart = diff_configs(Config(), new)
    assert restart == []
    assert set(reloadable) == {
        "auth.publish_tokens",
        "auth.require_publish_auth",
        "http.allowed_origins",
        "limits.max_messages_per_second",
        "limits.max_connections_per_ip",
    }


def test_reference_documents_the_security_keys() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    assert "## `[auth]`" in text
    assert "RINGCAST_AUTH_PUBLISH_TOKENS=tok1,tok2" in text
    assert "security.md" in text
    assert (ROOT / "docs" / "security.md").is_file()


def test_read_jwt_public_key(tmp_path: Path) -> None:
    assert Config().auth.read_jwt_public_key() == ""
    key = tmp_path / "jwt.pem"
    key.write_text("PEM TEXT\n")
    config = config_from_mapping({"auth": {"jwt_public_key_file": str(key)}})
    assert config.auth.read_jwt_public_key() == "PEM TEXT\n"
    key.write_text("ROTATED\n")  # replaced in place: read again
    assert config.auth.read_jwt_public_key() == "ROTATED\n"
    key.unlink()
    with pytest.raises(ConfigError) as info:
        config.auth.read_jwt_public_key()
    assert str(info.value) == (
        f'auth.jwt_public_key_file: cannot read "{key}": No such file or directory'
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://app:hunter2-is-secret@bad host", '"redis://app:***@bad host"'),
        ("redis://hunter2-is-secret@db:port", '"redis://***@db:port"'),
        ("rediss://:hunter2-is-secret@db", '"rediss://:***@db"'),
    ],
)
def test_credentials_in_a_url_are_masked_in_errors(tmp_path: Path, url: str, shown: str) -> None:
    # From the file and from the environment alike.
    (error,) = load_errors(tmp_path, f'[cluster]\nredis_url = "{url}"\n')
    assert error == (
        "ringcast.toml: cluster.redis_url: expected empty or redis://host[:port][/db], "
        f"got {shown}"
    )
    (error,) = load_errors(tmp_path, "", env={"RINGCAST_CLUSTER_REDIS_URL": url})
    assert "hunter2" not in error
    assert shown in error
