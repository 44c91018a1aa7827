"""docker-compose.monitoring.yml and the Dockerfile, checked by reading them.

No Docker engine is needed: the tests prove that the compose file is valid under the Compose
Specification's JSON schema, every image is pinned, every service has a health check, every
mounted file exists, secrets come from the environment only, and the host names and ports written
in the other configuration files (prometheus.yml, alertmanager.yml, the Grafana provisioning) are
the compose services and the ports they listen on. The image installs the wheel an earlier stage
of the Dockerfile builds, and nothing else of the source tree but the examples.

Checks that read a file another part of the stack provides skip, naming that file, while the file
does not exist yet.
"""

from __future__ import annotations

import fnmatch
import importlib.resources
import json
import posixpath
import re
import shlex
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.monitoring.yml"
DOCKERFILE = REPO / "Dockerfile"
# The Compose Specification's JSON schema, as check-jsonschema (a dev dependency) vendors it.
COMPOSE_SCHEMA_PACKAGE = "check_jsonschema.builtin_schemas.vendor"
COMPOSE_SCHEMA_FILE = "compose-spec.json"
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


# --- the Compose Specification ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_schema() -> Validator:
    """A validator for the Compose Specification's JSON schema, the copy check-jsonschema ships."""
    resource = importlib.resources.files(COMPOSE_SCHEMA_PACKAGE).joinpath(COMPOSE_SCHEMA_FILE)
    schema = json.loads(resource.read_text(encoding="utf-8"))
    assert schema.get("title") == "Compose Specification", schema.get("title")
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def _schema_errors(validator: Validator, document: Any) -> list[str]:
    return [
        f"{'.'.join(str(part) for part in error.absolute_path) or '<top>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_follows_the_compose_specification(
    compose_schema: Validator, compose: dict[str, Any]
) -> None:
    assert _schema_errors(compose_schema, compose) == []


@pytest.mark.parametrize(
    ("original", "misspelt"),
    [
        pytest.param("\nvolumes:\n", "volume", id="top-level key"),
        pytest.param("\n    healthcheck:\n", "healthceck", id="service key"),
        pytest.param("\n      start_period: 30s\n", "start_periode", id="healthcheck key"),
        pytest.param("\n    environment: SMTP_PASSWORD\n", "enviroment", id="secret key"),
        pytest.param("\n        mode: 0444\n", "mod", id="service secret key"),
        pytest.param("service_healthy", "service_healty", id="value"),
    ],
)
def test_the_schema_check_rejects_a_typo(
    compose_schema: Validator, original: str, misspelt: str
) -> None:
    # The same check on a copy of the file with one word misspelt fails, naming that word.
    text = COMPOSE.read_text(encoding="utf-8")
    assert original in text, f"{original!r} is no longer in {COMPOSE.name}; pick another typo"
    word = original.strip().split(":")[0]
    copy = text.replace(original, original.replace(word, misspelt), 1)
    errors = _schema_errors(compose_schema, yaml.safe_load(copy))
    assert any(f"'{misspelt}'" in error for error in errors), errors


def test_the_compose_release_needed_is_stated_in_the_file_and_the_readme() -> None:
    header = COMPOSE.read_text(encoding="utf-8")
    stated = re.search(r"^# Needs Docker Compose (v\d+\.\d+\.\d+) or later", header, re.M)
    assert stated, f"{COMPOSE.name} does not state the Compose release it needs"
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert f"needs Docker Compose {stated.group(1)} or later" in readme, "README.md disagrees"


def test_secret_files_are_readable_by_the_non_root_services(
    services: dict[str, dict[str, Any]],
) -> None:
    # Some Compose releases write a secret from the environment root-owned with mode 0400 or 0440
    # unless the service says otherwise; every service reading one here runs as a non-root user.
    for name, service in services.items():
        for secret in service.get("secrets", []):
            assert isinstance(secret, dict), f"{name}: {secret} needs the long syntax and a mode"
            assert secret.get("mode") == 0o444, f"{name}: {secret['source']} mode"


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


class Stage(NamedTuple):
    base: str  # the image, or the name of an earlier stage
    name: str | None
    instructions: list[tuple[str, str]]  # those after FROM, up to the next FROM


def _dockerfile_stages() -> list[Stage]:
    stages: list[Stage] = []
    for keyword, arguments in _dockerfile_instructions():
        if keyword == "FROM":
            words = [word for word in arguments.split() if not word.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"FROM {arguments}"
            stages.append(Stage(words[0], name, []))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, arguments))
    assert stages, "the Dockerfile has no FROM"
    return stages


def _copy_parts(arguments: str) -> tuple[dict[str, str], list[str], str]:
    """The --flags, sources and destination of a COPY or ADD, shell or JSON form."""
    match = re.fullmatch(r"((?:--\S+\s+)*)(.*)", arguments, re.S)
    assert match is not None
    flags = dict(flag[2:].partition("=")[::2] for flag in match.group(1).split())
    rest = match.group(2)
    paths: list[str] = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    assert len(paths) >= 2, f"COPY {arguments}"
    return flags, paths[:-1], paths[-1]


def _run_commands(stage: Stage) -> list[tuple[str, list[str]]]:
    """(WORKDIR, words) of each simple command the stage's RUN instructions execute."""
    commands: list[tuple[str, list[str]]] = []
    workdir = "/"
    for keyword, arguments in stage.instructions:
        if keyword == "WORKDIR":
            workdir = posixpath.join(workdir, arguments)
        if keyword != "RUN":
            continue
        if arguments.startswith("["):
            commands.append((workdir, list(json.loads(arguments))))
            continue
        lexer = shlex.shlex(arguments, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|", "&"):
                if words:
                    commands.append((workdir, words))
                words = []
            else:
                words.append(token)
    return commands


def _pip_arguments(words: list[str], subcommand: str) -> list[str] | None:
    """The arguments after ``pip <subcommand>`` (or ``python -m pip``), None for another command."""
    if words[:1] in (["pip"], ["pip3"]):
        rest = words[1:]
    elif words[:1] and words[0].startswith("python") and words[1:3] == ["-m", "pip"]:
        rest = words[3:]
    else:
        return None
    return rest[1:] if rest[:1] == [subcommand] else None


def _option_value(arguments: list[str], *names: str) -> str | None:
    for index, argument in enumerate(arguments):
        for name in names:
            if argument == name and index + 1 < len(arguments):
                return arguments[index + 1]
            if name.startswith("--") and argument.startswith(f"{name}="):
                return argument.split("=", 1)[1]
    return None


def _pip_install_requirements(workdir: str, arguments: list[str]) -> list[str]:
    """What ``pip install <arguments>`` installs, as absolute paths; fails on -e and -r."""
    requirements: list[str] = []
    values = iter(arguments)
    for argument in values:
        if argument.startswith(("-e", "--editable", "-r", "--requirement")):
            pytest.fail(f"pip install {' '.join(arguments)}: installs from the source tree")
        if argument in ("-c", "--constraint", "-i", "--index-url", "--extra-index-url"):
            next(values, None)  # the option's value
        elif not argument.startswith("-"):
            requirements.append(posixpath.normpath(posixpath.join(workdir, argument)))
    return requirements


def _dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_base_user_ports_and_healthcheck() -> None:
    stages = _dockerfile_stages()
    names = [stage.name for stage in stages]
    for index, stage in enumerate(stages):
        if stage.base in names[:index]:
            continue  # built on an earlier stage
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", stage.base), stage.base
        # Pinned to an exact release, not a moving tag such as 3.11-slim or latest.
        tag = _image_tag(stage.base)
        assert tag is not None and re.fullmatch(r"\d+\.\d+\.\d+(-[\w.]+)*", tag), stage.base
    # The image is the last stage: what it runs as, exposes and checks.
    instructions = stages[-1].instructions
    keywords = [keyword for keyword, _ in instructions]
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


def test_image_installs_the_wheel_built_in_an_earlier_stage() -> None:
    stages = _dockerfile_stages()
    runtime, earlier = stages[-1], {stage.name: stage for stage in stages[:-1] if stage.name}

    # The wheel directory of each earlier stage that builds one (pip wheel or python -m build).
    wheel_dirs: dict[str, str] = {}
    for name, stage in earlier.items():
        for workdir, words in _run_commands(stage):
            pip_wheel = _pip_arguments(words, "wheel")
            if pip_wheel is not None:
                assert "--no-deps" in pip_wheel, "the image's wheel only, not its dependencies"
                out = _option_value(pip_wheel, "-w", "--wheel-dir") or "."
                wheel_dirs[name] = posixpath.join(workdir, out)
            elif words[1:3] == ["-m", "build"] and "--wheel" in words:
                out = _option_value(words, "-o", "--outdir") or "dist"
                wheel_dirs[name] = posixpath.join(workdir, out)
    assert wheel_dirs, "no build stage makes a wheel"

    # Copied from there into the image...
    copied: list[str] = []
    workdir = "/"
    for keyword, arguments in runtime.instructions:
        if keyword == "WORKDIR":
            workdir = posixpath.join(workdir, arguments)
        if keyword != "COPY":
            continue
        flags, sources, destination = _copy_parts(arguments)
        if "from" not in flags:
            continue
        assert flags["from"] in wheel_dirs, f"COPY {arguments}: not from a stage building a wheel"
        wheel_dir = posixpath.normpath(wheel_dirs[flags["from"]])
        for source in map(posixpath.normpath, sources):
            assert posixpath.commonpath([source, wheel_dir]) == wheel_dir, (
                f"COPY {arguments}: {source} is not in the wheel directory {wheel_dir}"
            )
        copied.append(posixpath.normpath(posixpath.join(workdir, destination)))
    assert copied, "the image copies nothing from the stage that builds the wheel"

    # ...and installed as a file, without extras; never the source tree, never editable.
    installed: list[str] = []
    for workdir, words in _run_commands(runtime):
        pip_install = _pip_arguments(words, "install")
        if pip_install is not None:
            requirements = _pip_install_requirements(workdir, pip_install)
            assert requirements, f"pip install {' '.join(pip_install)}"
            for requirement in requirements:
                assert requirement.endswith(".whl"), f"pip install {requirement}: not a wheel file"
            installed += requirements
    assert any(
        posixpath.commonpath([wheel, directory]) == directory
        for wheel in installed
        for directory in copied
    ), f"the image installs {installed}, none of them copied from the wheel stage ({copied})"


def _copied_sources(stage: Stage) -> list[str]:
    """Paths a stage copies from the build context (not from another stage)."""
    sources: list[str] = []
    for keyword, arguments in stage.instructions:
        if keyword in ("COPY", "ADD"):
            flags, paths, _ = _copy_parts(arguments)
            if "from" not in flags:
                sources += [path.rstrip("/") or "." for path in paths]
    return sources


def test_wheel_stage_copies_what_the_build_reads_and_the_image_only_the_examples() -> None:
    stages = _dockerfile_stages()
    # pyproject.toml names the readme and the license files, setuptools reads both to build; the
    # one package is exporter/ (the CLI entry point's).
    pyproject = PYPROJECT.read_text(encoding="utf-8")
    readme = re.search(r'^readme = "([^"]+)"', pyproject, re.M)
    license_files = re.search(r"^license-files = \[([^\]]*)\]", pyproject, re.M)
    assert readme and license_files
    needed = {"pyproject.toml", readme.group(1), "exporter"}
    needed |= set(re.findall(r'"([^"]+)"', license_files.group(1)))
    builders = [set(_copied_sources(stage)) for stage in stages[:-1]]
    assert any(needed <= copied for copied in builders), f"no build stage copies all of {needed}"
    # The image itself takes nothing from the source tree but the examples' data.
    assert set(_copied_sources(stages[-1])) <= {"examples"}, _copied_sources(stages[-1])


def test_dockerfile_copies_only_existing_sources_the_context_keeps() -> None:
    sources = [source for stage in _dockerfile_stages() for source in _copied_sources(stage)]
    assert sources
    ignored = _dockerignore_patterns()
    for source in sources:
        excluded = [p for p in ignored if fnmatch.fnmatch(source, p.lstrip("/"))]
        assert not excluded, f"COPY {source} is excluded from the context by {excluded}"
    for entry in (".git", ".venv", ".env"):
        assert entry in ignored, f".dockerignore must exclude {entry}"
    missing = [source for source in sources if not (REPO / source).exists()]
    assert not missing, f"Dockerfile COPY sources missing from the repository: {missing}"


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
