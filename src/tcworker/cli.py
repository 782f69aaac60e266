"""The ``tcworker`` command line: ``run``, ``exec``, ``validate``, ``schema``, ``new-ed25519-keypair``,
``version``.

Each command imports what it needs inside its body, so ``tcworker --version`` stays fast
(no taskcluster client, aiohttp or pydantic at start-up).

Exit statuses: ``exec`` 0 completed, 1 failed, 2 exception; ``validate`` 0 valid, 2 invalid;
``run`` as generic-worker (``docs/cli.md``); 64 when the config cannot be loaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tcworker import __version__

EXIT_CONFIG = 64


def _load_config(path: str | None):
    from tcworker.config import load_config
    from tcworker.errors import ConfigError

    try:
        return load_config(path)
    except ConfigError as err:
        click.echo(f"tcworker: {err}", err=True)
        sys.exit(EXIT_CONFIG)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tcworker")
def cli() -> None:
    """tcworker: a Taskcluster worker (generic-worker and docker-worker payloads)."""


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(f"tcworker {__version__}")


@cli.command()
@click.argument("task_file", type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="worker config (YAML/JSON)")
def validate(task_file: str, config_path: str | None) -> None:
    """Check a task definition, a payload, or a case file; print every problem with its field path."""
    from tcworker.payloads import cli_validate

    code, lines = cli_validate(task_file, _load_config(config_path))
    for line in lines:
        click.echo(line)
    sys.exit(code)


@cli.command()
@click.argument("what", type=click.Choice(["payload", "config"]))
def schema(what: str) -> None:
    """Print the JSON Schema of a payload or of the worker config."""
    if what == "payload":
        from tcworker.payloads import payload_json_schema

        document = payload_json_schema()
    else:
        from tcworker.config import WorkerConfig

        document = WorkerConfig.model_json_schema(by_alias=True)
    click.echo(json.dumps(document, indent=2, sort_keys=True))


@cli.command("exec")
@click.argument("task_file", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="artifact folder [./tcworker-out/<taskId>/]")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="partial worker config")
@click.option("--engine", type=click.Choice(["native", "docker"]), help="engine [from the payload's shape]")
@click.option("--task-id", help="task id [a new slugid]")
@click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE", help="extra task env (repeatable)")
@click.option("--keep-task-dir", is_flag=True, help="leave the task directory in place")
def exec_(task_file, out_dir, config_path, engine, task_id, env_pairs, keep_task_dir) -> None:
    """Run one task definition here, as the worker would, without a queue."""
    from tcworker.execrun import ExecOptions, exec_task

    env = {}
    for pair in env_pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--env")
        env[name] = value
    options = ExecOptions(
        task_file=Path(task_file),
        out_dir=Path(out_dir) if out_dir else None,
        engine=engine,
        task_id=task_id,
        env=env,
        keep_task_dir=keep_task_dir,
    )
    sys.exit(exec_task(options, _load_config(config_path)))


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="worker config")
@click.option("--with-worker-runner", is_flag=True, help="speak worker-runner's protocol on stdin/stdout")
def run(config_path: str, with_worker_runner: bool) -> None:
    """Claim and run tasks from a Taskcluster queue until told to stop."""
    if with_worker_runner:  # the runner hears why a config cannot be loaded (error-report)
        from tcworker.runner import run_with_worker_runner

        sys.exit(run_with_worker_runner(config_path))
    from tcworker.worker import run_worker

    sys.exit(run_worker(_load_config(config_path), config_path=config_path))


@cli.command("new-ed25519-keypair")
@click.option("--file", "key_file", required=True, type=click.Path(dir_okay=False),
              help="where to write the private key (base64 seed, mode 0600; never overwritten)")
def new_ed25519_keypair(key_file: str) -> None:
    """Create a Chain of Trust signing key (config ed25519SigningKeyLocation); print its public key."""
    from tcworker.cot import write_new_keypair

    try:
        click.echo(write_new_keypair(key_file))
    except OSError as err:
        click.echo(f"tcworker: {key_file}: {err.strerror or err}", err=True)
        sys.exit(1)


EXIT_INTERNAL_ERROR = 2


def main() -> None:
    """Console-script entry point. An unexpected error (a bug) exits 2 with one line on stderr,
    never 1, which ``exec`` uses for a failed task; ``TCWORKER_DEBUG=1`` adds the traceback."""
    import os

    try:
        cli(prog_name="tcworker")
    except Exception as err:  # noqa: BLE001 - the last stop before the user's terminal
        if os.environ.get("TCWORKER_DEBUG"):
            import traceback

            traceback.print_exc()
        click.echo(f"tcworker: internal error: {type(err).__name__}: {err}", err=True)
        sys.exit(EXIT_INTERNAL_ERROR)
