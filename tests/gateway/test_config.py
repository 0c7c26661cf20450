from __future__ import annotations

import pathlib

import pytest

from gateway import config
from gateway.config import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[2]


def write(tmp_path, text: str) -> str:
    p = tmp_path / "telacd.toml"
    p.write_text(text)
    return str(p)


def test_defaults_without_a_file():
    cfg = config.load(None, env={})
    assert cfg.gateway["tcp"] == "127.0.0.1:6808"
    assert cfg.gateway["http"] == "127.0.0.1:8080"
    assert cfg.store["url"] == "sqlite:///./telacd-data/telacd.db"
    assert [q.name for q in cfg.queues] == ["emergency", "service"]
    em = cfg.queue("emergency")
    # crash above SOS above rollover
    prio = {c.name: c.priority for c in em.classes}
    assert prio["crash"] > prio["sos"] > prio["rollover"]
    assert em.skills == {"emergency": 1}
    assert cfg.queue("service").skills == {"service": 1}
    bits = {t.alarm_bit: t.kind for t in cfg.triggers if t.alarm_bit is not None}
    assert bits == {0: "sos", 29: "crash", 30: "rollover"}
    (service,) = [t for t in cfg.triggers if t.passthrough_type is not None]
    assert (service.kind, service.passthrough_type, service.queue) == ("service", 0xF0, "service")
    assert cfg.agents == () and cfg.address("tcp").port == 6808


def test_file_merges_queues_and_triggers_by_name(tmp_path):
    path = write(
        tmp_path,
        """
[gateway]
tcp = "0.0.0.0:7000"
[[queues]]
name = "service"
strategy = "round-robin"
skills = { service = 3 }
classes = [ { name = "normal", priority = 5, target_s = 30 } ]
[[queues]]
name = "complaints"
skills = { complaints = 1 }
[[agents]]
id = "a1"
token = "t"
skills = { emergency = 8, service = 5 }
capacity = { voice = 1, chat = 3 }
[[triggers]]
kind = "fatigue"
alarm_bit = 2
queue = "service"
class = "normal"
""",
    )
    cfg = config.load(path, env={})
    assert cfg.gateway["tcp"] == "0.0.0.0:7000" and cfg.gateway["http"] == "127.0.0.1:8080"
    assert [q.name for q in cfg.queues] == ["emergency", "service", "complaints"]
    assert cfg.queue("service").strategy == "round-robin" and cfg.queue("service").skills == {"service": 3}
    assert cfg.agents[0].skills == {"emergency": 8, "service": 5}
    assert cfg.agents[0].capacity == {"voice": 1, "chat": 3}
    assert {t.kind for t in cfg.triggers} == {"crash", "sos", "rollover", "service", "fatigue"}


def test_environment_overrides_scalars_and_lists(tmp_path):
    env = {
        "TELACD_GATEWAY_TCP": "127.0.0.1:9999",
        "TELACD_TERMINALS_MAX_MALFORMED": "3",
        "TELACD_TERMINALS_LENIENT_CHECKSUM": "true",
        "TELACD_SESSIONS_AGENT_GRACE_S": "2.5",
        "TELACD_AGENTS": '[{"id": "x", "token": "y", "skills": {"emergency": 2}}]',
        "TELACD_REQUIRE_SERVICES": "1",  # not a config key: ignored
    }
    cfg = config.load(None, env=env)
    assert cfg.gateway["tcp"] == "127.0.0.1:9999"
    assert cfg.terminals["max_malformed"] == 3
    assert cfg.terminals["lenient_checksum"] is True
    assert cfg.sessions["agent_grace_s"] == 2.5
    assert cfg.agents[0].id == "x"


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ("[gateway]\ntcp = 'nope'", "gateway.tcp", "HOST:PORT"),
        ("[gateway]\nbogus = 1", "gateway.bogus", "unknown key"),
        ("[nonsense]\na = 1", "nonsense", "unknown section"),
        ("[terminals]\nauth = 'maybe'", "terminals.auth", "open, registered or fixed"),
        ("[terminals]\nauth = 'fixed'", "terminals.fixed_code", "non-empty"),
        ("[terminals]\nmax_malformed = 'ten'", "terminals.max_malformed", "integer"),
        ("[store]\nurl = 'mysql://x'", "store.url", "sqlite:// or postgresql://"),
        ("[[queues]]\nname = 'q'\nstrategy = 'fastest'", "queues[q].strategy", "unknown strategy"),
        (
            "[[agents]]\nid = 'a'\ntoken = 't'\nskills = { emergency = 11 }",
            "agents[a].skills.emergency",
            "1-10",
        ),
        ("[[agents]]\nid = 'a'", "agents[a].token", "required"),
        ("[[triggers]]\nkind = 'k'\nalarm_bit = 40\nqueue = 'emergency'", "triggers[k].alarm_bit", "0-31"),
        ("[[triggers]]\nkind = 'k'\nalarm_bit = 3\nqueue = 'nowhere'", "triggers[k].queue", "no queue"),
        ("[[triggers]]\nkind = 'k'\nalarm_bit = 29\nqueue = 'emergency'", "triggers[k].alarm_bit", "already"),
        ("[[admins]]\nid = 'x'\ntoken = 't'\nrole = 'god'", "admins[x].role", "admin' or 'viewer"),
        ("[gateway]\nquic = '127.0.0.1:6809'", "gateway.quic", "quic_cert"),
        (
            "[[subscribers]]\nid = 's'\ntoken = 't'\nfilter = { events = ['exploded'] }",
            "subscribers[s].filter.events",
            "unknown event",
        ),
        ("not toml at all [", "-", "not valid TOML"),
    ],
)
def test_errors_name_file_key_and_reason(tmp_path, text, key, reason):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    err = info.value
    assert err.source == path and err.key == key and reason in err.reason
    assert str(err).startswith(f"{path}: {key}: ")


def test_env_errors_name_the_variable():
    with pytest.raises(ConfigError) as info:
        config.load(None, env={"TELACD_TERMINALS_MAX_BUFFER": "lots"})
    assert info.value.source == "$TELACD_TERMINALS_MAX_BUFFER" and info.value.key == "terminals.max_buffer"


@pytest.mark.parametrize(
    "env, var, key, reason",
    [
        # values of the right type that fail a later check still name the variable, not the file
        ({"TELACD_GATEWAY_TCP": "nonsense"}, "TELACD_GATEWAY_TCP", "gateway.tcp", "HOST:PORT"),
        (
            {"TELACD_TERMINALS_MAX_MALFORMED": "0"},
            "TELACD_TERMINALS_MAX_MALFORMED",
            "terminals.max_malformed",
            "at least 1",
        ),
        ({"TELACD_STORE_URL": "mysql://x"}, "TELACD_STORE_URL", "store.url", "sqlite://"),
        ({"TELACD_AGENTS": '[{"id": "a"}]'}, "TELACD_AGENTS", "agents[a].token", "required"),
        (
            {"TELACD_QUEUES": '[{"name": "x", "agents": ["nobody"]}]'},
            "TELACD_QUEUES",
            "queues[x].agents",
            "nobody",
        ),
        # a misspelt override is an error, not ignored
        ({"TELACD_GATEWAY_TPC": "127.0.0.1:1"}, "TELACD_GATEWAY_TPC", "gateway.tpc", "unknown key"),
        ({"TELACD_TENANTS": "[1]"}, "TELACD_TENANTS", "tenants", "JSON object"),
    ],
)
def test_semantic_env_errors_name_the_variable(tmp_path, env, var, key, reason):
    path = write(tmp_path, "[terminals]\nauth = 'open'\n")
    with pytest.raises(ConfigError) as info:
        config.load(path, env=env)
    assert (info.value.source, info.value.key) == (f"${var}", key) and reason in info.value.reason


def test_the_same_errors_in_the_file_name_the_file(tmp_path):
    path = write(tmp_path, "[gateway]\ntcp = 'nonsense'\n")
    with pytest.raises(ConfigError) as info:
        config.load(path, env={"TELACD_STORE_URL": "sqlite:///x.db"})
    assert (info.value.source, info.value.key) == (path, "gateway.tcp")


def test_tenants_from_the_environment():
    cfg = config.load(None, env={"TELACD_TENANTS": '{"0138": "acme"}'})
    assert cfg.tenant_of("013812345678") == "acme"


def test_missing_file():
    with pytest.raises(ConfigError, match="file not found"):
        config.load("/nonexistent/telacd.toml", env={})


def test_tenant_by_longest_phone_prefix():
    cfg = config.build({"tenants": {"0138": "a", "013800": "b"}}, "<t>", {})
    assert cfg.tenant_of("013800123456") == "b"
    assert cfg.tenant_of("013899999999") == "a"
    assert cfg.tenant_of("015000000000") == "default"


def test_annotated_example_is_valid_and_shows_the_defaults():
    example = config.load(str(ROOT / "deploy/telacd.toml"), env={})
    defaults = config.load(None, env={})
    for section in ("gateway", "store", "terminals", "sessions"):
        assert getattr(example, section) == getattr(defaults, section), section
    assert example.queues == defaults.queues and example.triggers == defaults.triggers
    assert [a.id for a in example.agents] == ["alice"]


def test_every_key_is_documented():
    text = (ROOT / "docs/configuration.md").read_text()
    for section, keys in config.SCALARS.items():
        assert f"`[{section}]`" in text
        for key in keys:
            assert f"| `{key}` |" in text, f"{section}.{key} is not documented"
