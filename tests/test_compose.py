"""docker-compose.monitoring.yml and the Dockerfile, checked by reading them.

No Docker engine is needed: the tests prove that every image is pinned, every service has a
health check, every mounted file exists, secrets come from the environment only, and the host
names and ports written in the other configuration files (prometheus.yml, alertmanager.yml, the
Grafana provisioning) are the compose services and the ports they listen on.

Checks that read a file another part of the stack provides skip, naming that file, while the file
does not exist yet.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.monitoring.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = REPO / "pyproject.toml"
PROMETHEUS_CONFIG = REPO / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = REPO / "alertmanager" / "alertmanager.yml"
GRAFANA_DATASOURCES = REPO / "grafana" / "provisioning" / "datasources"
GRAFANA_DASHBOARD_PROVIDERS = REPO / "grafana" / "provisioning" / "dashboards"

# The ports every part of the project agrees on (service name -> port inside and outside).
SERVICE_PORTS = {
    "exporter": 8000,
    "receiver": 9099,
    "prometheus": 9090,
    "alertmanager": 9093,
    "grafana": 3000,
}
EXPORTER_JOB = "model-exporter"  # the job label the rules and the Kubernetes ServiceMonitor use
EXACT_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "API_KEY", "API_URL")


# --- reading compose ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _require(path: Path) -> Path:
    """``path``, or skip the calling test naming it while another part of the stack is missing."""
    if not path.exists():
        pytest.skip(f"{path.relative_to(REPO)} does not exist yet")
    return path


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def _option(service: dict[str, Any], flag: str) -> str | None:
    """Value of ``flag`` in a service's command, written ``--flag value`` or ``--flag=value``."""
    command = _command(service)
    for index, arg in enumerate(command):
        if arg == flag and index + 1 < len(command):
            return command[index + 1]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


def _published(service: dict[str, Any]) -> list[tuple[str | None, int | None, int]]:
    """(host ip, host port, container port) of each ``ports`` entry, short or long syntax."""
    found: list[tuple[str | None, int | None, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = entry.get("published")
            found.append(
                (entry.get("host_ip"), int(published) if published else None, entry["target"])
            )
            continue
        parts = str(entry).split("/")[0].split(":")
        ip = parts[0] if len(parts) == 3 else None
        host = int(parts[-2]) if len(parts) >= 2 else None
        found.append((ip, host, int(parts[-1])))
    return found


def _container_ports(service: dict[str, Any]) -> set[int]:
    ports = {container for _, _, container in _published(service)}
    ports |= {int(str(port).split("/")[0]) for port in service.get("expose", [])}
    return ports


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to the repository) of each bind mount."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts[volume["target"]] = volume["source"]
            continue
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts[target] = source
    return mounts


def _named_volumes(service: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "volume":
                names.add(volume["source"])
            continue
        source = str(volume).split(":")[0]
        if not source.startswith((".", "/", "~")):
            names.add(source)
    return names


def _secret_files(service: dict[str, Any]) -> dict[str, str]:
    """Path of each secret file inside the container -> the compose secret it holds."""
    files: dict[str, str] = {}
    for secret in service.get("secrets", []):
        source = secret if isinstance(secret, str) else secret["source"]
        target = source if isinstance(secret, str) else secret.get("target", source)
        files[posixpath.join("/run/secrets", target)] = source
    return files


def _host_file(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository file a service sees at ``container_path`` through a bind mount."""
    for target, source in _bind_mounts(service).items():
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return REPO / source / posixpath.relpath(container_path, target)
    return None


def _split_address(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def _assert_is_service_port(
    services: dict[str, dict[str, Any]], address: str, where: str, *, self_name: str | None = None
) -> str:
    """``host:port`` names a compose service and a port it listens on; returns the service."""
    host, port = _split_address(address)
    if host in ("localhost", "127.0.0.1") and self_name is not None:
        host = self_name
    assert host in services, f"{where}: {address} is not a compose service ({sorted(services)})"
    ports = _container_ports(services[host])
    assert port in ports, f"{where}: {address} but service {host} listens on {sorted(ports)}"
    return host


# --- images, builds, the Dockerfile -------------------------------------------------------------


def _image_tag(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def test_every_image_is_pinned_to_an_exact_version(services: dict[str, dict[str, Any]]) -> None:
    version = re.search(r'^version = "([^"]+)"', PYPROJECT.read_text(encoding="utf-8"), re.M)
    assert version is not None
    for name, service in services.items():
        assert "image" in service, f"{name} has no image"
        tag = _image_tag(service["image"])
        assert tag is not None, f"{name}: {service['image']} has no tag"
        assert tag != "latest", f"{name}: {service['image']}"
        if "build" in service:
            # The locally built image is tagged with the package version it contains.
            assert tag == version.group(1), f"{name}: {service['image']}"
        else:
            assert EXACT_VERSION.match(tag), f"{name}: {service['image']} is not an exact version"


def test_built_services_share_the_repository_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    built = {name: service for name, service in services.items() if "build" in service}
    assert set(built) == {"exporter", "traffic", "receiver"}
    for name, service in built.items():
        build = service["build"]
        context = REPO / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = context / ("Dockerfile" if isinstance(build, str) else build["dockerfile"])
        assert dockerfile.resolve() == DOCKERFILE, name
    assert len({service["image"] for service in built.values()}) == 1, "one image, three roles"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, arguments = stripped.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_base_user_ports_and_healthcheck() -> None:
    instructions = _dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    [base] = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    exposed = {
        int(port.split("/")[0])
        for keyword, arguments in instructions
        if keyword == "EXPOSE"
        for port in arguments.split()
    }
    assert exposed == {SERVICE_PORTS["exporter"], SERVICE_PORTS["receiver"]}
    assert "HEALTHCHECK" in keywords
    [entrypoint] = [arguments for keyword, arguments in instructions if keyword == "ENTRYPOINT"]
    assert "model-exporter" in entrypoint
    assert re.search(r"^model-exporter = ", PYPROJECT.read_text(encoding="utf-8"), re.M)


def test_dockerfile_copies_only_existing_sources_the_context_keeps() -> None:
    sources = [
        source
        for keyword, arguments in _dockerfile_instructions()
        if keyword == "COPY"
        for source in arguments.split()[:-1]
        if not source.startswith("--")
    ]
    assert sources
    ignored = _dockerignore_patterns()
    for source in sources:
        excluded = [p for p in ignored if fnmatch.fnmatch(source.rstrip("/"), p.lstrip("/"))]
        assert not excluded, f"COPY {source} is excluded from the context by {excluded}"
    for entry in (".git", ".venv", ".env"):
        assert entry in ignored, f".dockerignore must exclude {entry}"
    missing = [source for source in sources if not (REPO / source).exists()]
    if missing:
        pytest.skip(f"Dockerfile COPY sources do not exist yet: {', '.join(missing)}")


# --- health checks, ports, mounts ---------------------------------------------------------------


def test_every_service_has_a_healthcheck_probing_a_real_port(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable", False), name
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), f"{name}: {test}"
        urls = re.findall(r"https?://[^\s'\"]+", " ".join(test[1:]))
        assert urls, f"{name}: the healthcheck probes no URL"
        for url in urls:
            _assert_is_service_port(
                services, urlsplit(url).netloc, f"{name} healthcheck", self_name=name
            )


def test_published_ports_are_the_agreed_ones_on_loopback(
    services: dict[str, dict[str, Any]],
) -> None:
    published = {name: _published(service) for name, service in services.items()}
    assert {name: entries for name, entries in published.items() if entries} == {
        name: [("127.0.0.1", port, port)] for name, port in SERVICE_PORTS.items()
    }


def test_project_services_listen_on_their_published_port(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("exporter", "receiver"):
        port = _option(services[name], "--port")
        assert port is not None and int(port) in _container_ports(services[name]), name
        assert _option(services[name], "--host") == "0.0.0.0", f"{name} must listen beyond lo"
    for name in ("prometheus", "alertmanager"):
        address = _option(services[name], "--web.listen-address")
        assert address is not None, f"{name}: --web.listen-address"
        assert _split_address(address)[1] == SERVICE_PORTS[name], f"{name}: {address}"
    target = _option(services["traffic"], "--target")
    assert target is not None
    assert _assert_is_service_port(services, urlsplit(target).netloc, "traffic --target") == (
        "exporter"
    )


def test_exporter_config_is_in_the_image() -> None:
    # The Dockerfile copies examples/ to the image's working directory, where the relative
    # --config path of the exporter service resolves.
    compose = _load_yaml(COMPOSE)
    config = _option(compose["services"]["exporter"], "--config")
    assert config is not None and not config.startswith("/")
    assert config.split("/")[0] == "examples"
    _require(REPO / config)


def test_bind_mounts_exist_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    missing = []
    for name, service in compose["services"].items():
        for source in _bind_mounts(service).values():
            assert not source.startswith(("/", "~")), f"{name}: {source} is outside the repo"
            if not (REPO / source).exists():
                missing.append(source)
        undeclared = _named_volumes(service) - declared
        assert not undeclared, f"{name}: volumes not declared at the top level: {undeclared}"
    if missing:
        pytest.skip(f"bind-mounted paths do not exist yet: {', '.join(missing)}")


def test_secrets_come_from_the_environment_only(compose: dict[str, Any]) -> None:
    secrets = compose.get("secrets") or {}
    assert secrets
    for name, definition in secrets.items():
        assert set(definition) == {"environment"}, f"secret {name} must come from the environment"
    for name, service in compose["services"].items():
        unknown = set(_secret_files(service).values()) - set(secrets)
        assert not unknown, f"{name}: undefined secrets {unknown}"
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        for key in environment:
            if any(word in key.upper() for word in SECRET_WORDS):
                assert key.endswith("_FILE"), f"{name}: {key} passes a secret as a value"
                assert environment[key] in _secret_files(service), f"{name}: {key}"


# --- agreement with the other configuration files -----------------------------------------------


def test_receiver_and_alertmanager_share_one_token_secret(
    services: dict[str, dict[str, Any]],
) -> None:
    token_file = _option(services["receiver"], "--token-file")
    assert token_file is not None
    receiver_secrets = _secret_files(services["receiver"])
    assert token_file in receiver_secrets, f"the receiver's {token_file} is not a secret"
    config = _load_yaml(ALERTMANAGER_CONFIG)
    [credentials_file] = [
        webhook["http_config"]["authorization"]["credentials_file"]
        for receiver in config["receivers"]
        for webhook in receiver.get("webhook_configs", [])
    ]
    alertmanager_secrets = _secret_files(services["alertmanager"])
    assert alertmanager_secrets.get(credentials_file) == receiver_secrets[token_file]


def test_alertmanager_config_agrees_with_compose(services: dict[str, dict[str, Any]]) -> None:
    alertmanager = services["alertmanager"]
    config_path = _option(alertmanager, "--config.file")
    assert config_path is not None
    assert _host_file(alertmanager, config_path) == ALERTMANAGER_CONFIG
    config = _load_yaml(ALERTMANAGER_CONFIG)

    # Every *_file the configuration reads is a secret mounted into the container.
    secret_files = _secret_files(alertmanager)
    wanted = set(re.findall(r"_file: (\S+)", ALERTMANAGER_CONFIG.read_text(encoding="utf-8")))
    assert wanted and wanted <= set(secret_files), wanted - set(secret_files)

    # Templates resolve against the config file's directory, inside a mount that holds them.
    for pattern in config["templates"]:
        container = posixpath.join(posixpath.dirname(config_path), pattern)
        host = _host_file(alertmanager, posixpath.dirname(container))
        assert host is not None, f"templates {container} are not mounted"
        assert list(host.glob(posixpath.basename(container))), f"no file matches {container}"

    # The webhook posts to the receiver service, on the port and path it serves.
    [url] = [
        webhook["url"]
        for receiver in config["receivers"]
        for webhook in receiver.get("webhook_configs", [])
    ]
    parts = urlsplit(url)
    assert _assert_is_service_port(services, parts.netloc, "webhook url") == "receiver"
    assert parts.port == int(_option(services["receiver"], "--port") or 0)
    assert parts.path == "/alerts"


def test_prometheus_config_agrees_with_compose(services: dict[str, dict[str, Any]]) -> None:
    config = _load_yaml(_require(PROMETHEUS_CONFIG))
    prometheus = services["prometheus"]
    config_path = _option(prometheus, "--config.file")
    assert config_path is not None
    assert _host_file(prometheus, config_path) == PROMETHEUS_CONFIG

    # Rule files resolve (relative to the config's directory) inside the mounted rules folder.
    rule_files = config.get("rule_files") or []
    assert rule_files, "prometheus.yml loads no rule files"
    for pattern in rule_files:
        container = posixpath.join(posixpath.dirname(config_path), pattern)
        host = _host_file(prometheus, container)
        assert host is not None, f"rule files {container} are not mounted"
        assert list(host.parent.glob(host.name)), f"no rule file matches {pattern}"

    # Every static scrape target is a compose service and one of its ports.
    jobs: dict[str, list[str]] = {}
    for scrape in config.get("scrape_configs") or []:
        for static in scrape.get("static_configs") or []:
            for target in static.get("targets") or []:
                _assert_is_service_port(
                    services, target, f"job {scrape['job_name']}", self_name="prometheus"
                )
                jobs.setdefault(scrape["job_name"], []).append(target)
    exporter = f"exporter:{SERVICE_PORTS['exporter']}"
    assert exporter in jobs.get(EXPORTER_JOB, []), f"job {EXPORTER_JOB} must scrape {exporter}"

    # Alerts go to the alertmanager service.
    alertmanagers = [
        target
        for entry in (config.get("alerting") or {}).get("alertmanagers") or []
        for static in entry.get("static_configs") or []
        for target in static.get("targets") or []
    ]
    assert alertmanagers, "prometheus.yml sends alerts nowhere"
    for target in alertmanagers:
        assert _assert_is_service_port(services, target, "alerting") == "alertmanager"


def test_grafana_datasource_points_at_prometheus(services: dict[str, dict[str, Any]]) -> None:
    files = sorted(_require(GRAFANA_DATASOURCES).glob("*.y*ml"))
    if not files:
        pytest.skip(f"{GRAFANA_DATASOURCES.relative_to(REPO)} has no datasource yet")
    grafana = services["grafana"]
    assert _host_file(grafana, "/etc/grafana/provisioning/datasources") == GRAFANA_DATASOURCES
    datasources = [ds for path in files for ds in _load_yaml(path).get("datasources") or []]
    prometheus = [ds for ds in datasources if ds.get("type") == "prometheus"]
    assert prometheus, "no Prometheus datasource"
    for datasource in prometheus:
        url = urlsplit(datasource["url"])
        assert _assert_is_service_port(services, url.netloc, "datasource") == "prometheus"
        assert url.geturl() == f"http://prometheus:{SERVICE_PORTS['prometheus']}"


def test_grafana_dashboard_provider_reads_the_mounted_dashboards(
    services: dict[str, dict[str, Any]],
) -> None:
    files = sorted(_require(GRAFANA_DASHBOARD_PROVIDERS).glob("*.y*ml"))
    if not files:
        pytest.skip(f"{GRAFANA_DASHBOARD_PROVIDERS.relative_to(REPO)} has no provider yet")
    grafana = services["grafana"]
    assert _host_file(grafana, "/etc/grafana/provisioning/dashboards") == (
        GRAFANA_DASHBOARD_PROVIDERS
    )
    providers = [p for path in files for p in _load_yaml(path).get("providers") or []]
    assert providers
    for provider in providers:
        path = provider["options"]["path"]
        assert _host_file(grafana, path) == REPO / "grafana" / "dashboards", path
