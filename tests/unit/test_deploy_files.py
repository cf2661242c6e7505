"""The deploy files are checked here, since no Docker engine or AWS account is at hand: lint, parse, cross-check."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from bench.coldstart import lambda_code

ROOT = Path(__file__).resolve().parents[2]
TASKRELAY_SERVICES = {"api", "bridge", "worker", "scheduler", "dashboard"}


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def documented_variables() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))


def test_sam_template_passes_cfn_lint():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(ROOT / "infra" / "template.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_template_runs_the_handler_and_every_process():
    template = (ROOT / "infra" / "template.yaml").read_text()
    assert "Handler: handler.lambda_handler" in template
    assert "Runtime: python3.11" in template
    for target in ("bridge", "worker", "scheduler"):
        assert f"Command: [make, {target}]" in template
        assert target in makefile_targets()


def test_samconfig_is_valid_toml():
    config = tomllib.loads((ROOT / "infra" / "samconfig.toml").read_text())
    assert config["default"]["deploy"]["parameters"]["capabilities"] == "CAPABILITY_IAM"


def test_compose_services_run_documented_make_targets():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "rabbitmq"} | TASKRELAY_SERVICES <= set(services)
    targets = makefile_targets()
    readme = (ROOT / "README.md").read_text()
    for name in TASKRELAY_SERVICES:
        command = services[name]["command"]
        assert command[0] == "make" and command[1] in targets, (name, command)
        assert f"make {command[1]}" in readme, f"README does not document `make {command[1]}`"
        assert services[name]["env_file"] == ".env"


def test_compose_worker_scales_and_services_have_healthchecks():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert "ports" not in services["worker"] and "container_name" not in services["worker"]
    for name in ("redis", "rabbitmq", "api", "dashboard"):
        assert "healthcheck" in services[name], name
    assert "15672:15672" in services["rabbitmq"]["ports"]


def test_every_variable_in_env_example_is_documented():
    example = (ROOT / ".env.example").read_text()
    variables = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    assert {"REDIS_URL", "RABBITMQ_URL"} <= variables
    assert variables - documented_variables() == set()


def test_every_setting_read_from_the_environment_is_documented():
    source = (ROOT / "core" / "settings.py").read_text()
    read = set(re.findall(r'env\.get\("([A-Z][A-Z0-9_]+)"', source))
    read |= set(re.findall(r'_(?:int|float|bool|list|choice|positive|key)\(env, "([A-Z][A-Z0-9_]+)"', source))
    expected = {"REDIS_URL", "LOG_LEVEL", "WORKER_CLASS", "WORKERS", "TASKRELAY_BOOTSTRAP_KEY"}
    assert expected <= read, "the patterns above no longer match the code"
    assert read - documented_variables() == set()


def test_only_the_settings_module_reads_the_environment():
    product = [p for folder in ("app", "bridge", "core", "infra", "jobs") for p in (ROOT / folder).rglob("*.py")]
    readers = re.compile(r"os\.environ\.get|os\.environ\[|os\.getenv|environ\.get\(")
    offenders = [
        str(path.relative_to(ROOT))
        for path in [*product, ROOT / "handler.py"]
        if path != ROOT / "core" / "settings.py" and readers.search(path.read_text())
    ]
    assert offenders == []


class _CloudFormationLoader(yaml.SafeLoader):
    """Reads !Sub, !Ref and the other short-form intrinsics as their plain argument."""


_CloudFormationLoader.add_multi_constructor(
    "!", lambda loader, suffix, node: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None
)


def test_sam_runs_the_api_with_auth_on_and_the_bootstrap_key_from_secrets_manager():
    template = yaml.load((ROOT / "infra" / "template.yaml").read_text(), Loader=_CloudFormationLoader)
    variables = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["TASKRELAY_AUTH"] == "on"
    assert variables["TASKRELAY_BOOTSTRAP_KEY"] == "{{resolve:secretsmanager:${BootstrapKeySecretArn}}}"
    parameter = template["Parameters"]["BootstrapKeySecretArn"]
    assert "Default" not in parameter and "Secrets Manager" in parameter["Description"]
    assert not [name for name in template["Parameters"] if "key" in name.lower() and not name.endswith("SecretArn")]


def test_sam_offers_the_ingress_modes_the_settings_accept_with_the_same_default():
    from core.settings import DEFAULT_INGRESS_MODE, INGRESS_MODES

    template = yaml.load((ROOT / "infra" / "template.yaml").read_text(), Loader=_CloudFormationLoader)
    parameter = template["Parameters"]["IngressMode"]
    assert sorted(parameter["AllowedValues"]) == sorted(INGRESS_MODES)
    assert parameter["Default"] == DEFAULT_INGRESS_MODE == "dual"
    variables = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["INGRESS_MODE"] == "IngressMode"  # !Ref IngressMode


def test_compose_runs_the_api_and_dashboard_with_auth_on_and_a_required_bootstrap_key():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("api", "dashboard"):
        environment = services[name]["environment"]
        assert environment["TASKRELAY_AUTH"] == "on", name
        assert environment["TASKRELAY_BOOTSTRAP_KEY"].startswith("${TASKRELAY_BOOTSTRAP_KEY:?"), name
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])  # open without a key
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^TASKRELAY_AUTH=on$", example, re.MULTILINE)
    assert re.search(r"^TASKRELAY_BOOTSTRAP_KEY=$", example, re.MULTILINE)  # no shared default key to forget


def test_healthchecks_ask_the_readiness_route_the_app_serves():
    from app import auth

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, port in (("api", 5000), ("dashboard", 9181)):
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in probe, name
        assert services[name]["healthcheck"]["interval"] and services[name]["healthcheck"]["retries"], name
    template = yaml.load((ROOT / "infra" / "template.yaml").read_text(), Loader=_CloudFormationLoader)
    check = template["Resources"]["ApiReadinessCheck"]
    assert check["Type"] == "AWS::Route53::HealthCheck"
    config = check["Properties"]["HealthCheckConfig"]
    assert config["Type"] == "HTTPS" and config["ResourcePath"] == "/Prod/readyz"
    stage = template["Resources"]["Api"]["Properties"]["StageName"]
    assert config["ResourcePath"].startswith(f"/{stage}/")
    assert ("GET", "/readyz") in auth.OPEN_ROUTES and ("GET", "/healthz") in auth.OPEN_ROUTES  # probes send no key


def test_the_lambda_package_holds_compiled_bytecode_for_all_its_code(tmp_path):
    """`sam build` runs `make build-ApiFunction`; its `lambda-code` step leaves a package whose cold start compiles
    nothing of ours (Lambda's /var/task is read-only: without .pyc files every start compiles every module)."""
    template = yaml.load((ROOT / "infra" / "template.yaml").read_text(), Loader=_CloudFormationLoader)
    assert template["Resources"]["ApiFunction"]["Metadata"]["BuildMethod"] == "makefile"
    assert re.search(r"^build-ApiFunction:", (ROOT / "Makefile").read_text(), re.MULTILINE)
    package = lambda_code(tmp_path / "package")
    assert sorted(p.name for p in package.iterdir()) == ["__pycache__", "app", "bridge", "core", "handler.py", "jobs"]
    event = str(ROOT / "infra" / "events" / "get_task.json")
    first_request = (
        f"import json, handler\nevent = json.load(open({event!r}))\n"
        "event.update(path='/healthz', pathParameters={'proxy': 'healthz'})\n"
        "assert int(handler.lambda_handler(event, None)['statusCode']) == 200\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(package),
        "PYTHONDONTWRITEBYTECODE": "1",
        "TASKRELAY_AUTH": "off",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # /healthz and create_app need no Redis
        "LOG_LEVEL": "ERROR",
    }
    command = [sys.executable, "-v", "-c", first_request]
    run = subprocess.run(command, cwd=package, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    ours = [line for line in run.stderr.splitlines() if line.startswith("# code object from") and str(package) in line]
    assert len(ours) > 40  # handler, app, core, bridge and jobs modules were loaded from the package
    assert [line for line in ours if "__pycache__" not in line] == []


def test_gunicorn_conf_sets_only_gunicorn_settings_and_no_control_socket():
    """gunicorn ignores a name it does not know, so a misspelt setting would silently do nothing."""
    from gunicorn.config import Config

    settings = {k: v for k, v in runpy.run_path(str(ROOT / "gunicorn.conf.py")).items() if not k.startswith("_")}
    settings.pop("sys")
    known = Config().settings
    assert set(settings) <= set(known), set(settings) - set(known)
    assert settings == {"reuse_port": True, "control_socket_disable": True}
